"""The embedded PostgreSQL and Valkey a benchmark of the management server runs against."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bench._common import free_port, loop_factory
from freqfleet import database
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from shared.logging import configure_logging
from shared.settings import LogFormat

T = TypeVar("T")


def run_on_servers(name: str, bench: Callable[[Path, EmbeddedPostgres, EmbeddedValkey], Coroutine[Any, Any, T]]) -> T:
    """Start Valkey and a migrated PostgreSQL in a fresh folder, run ``bench(workdir, pg, valkey)`` on
    the benchmarks' event loop, then stop both and remove the folder."""
    configure_logging("bench", "WARNING", LogFormat.json)
    # Not under pytest's temporary tree, and traversable: PostgreSQL may run as another user (see tests/conftest.py).
    workdir = Path(tempfile.mkdtemp(prefix=f"freqfleet-bench-{name}-"))
    try:
        valkey = EmbeddedValkey(workdir, free_port())
        valkey.start()
        try:
            pg = EmbeddedPostgres(workdir)
            pg.start()
            try:
                database.upgrade(pg.url())
                with asyncio.Runner(loop_factory=loop_factory()) as runner:
                    return runner.run(bench(workdir, pg, valkey))
            finally:
                pg.stop()
        finally:
            valkey.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
