"""The event bus over Redis Streams: envelopes (``messages``), ``publisher``, ``consumer``, ``dedupe``,
``generations``, stream names and retention (``streams``), backlogs (``backlog``) and ``dead_letters``.

Import from the modules themselves: this package imports nothing, so ``shared.settings`` can use
``shared.bus.streams`` without pulling in the consumer (which logs, which reads the settings).
"""
