"""Benchmarks: each module in this package measures something against a baseline run alongside it.

``python -m bench.run`` (``make bench``) runs them all and prints their figures; ``--quick`` shortens
every run. Modules whose names start with ``_`` are helpers, not benchmarks. The figures we keep are
recorded in ``docs/benchmarks.md`` with the command that produced them. Timings belong here, never in
tests.
"""
