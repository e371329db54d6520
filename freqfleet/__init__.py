"""The ``freqfleet`` command: the embedded stack, the supervisor, and each service's entry point."""
