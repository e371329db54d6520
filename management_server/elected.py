"""Background work that runs in one management process at a time, whichever it is.

With several management processes (``FREQFLEET_MANAGEMENT_WORKERS`` on one host, replicas on others) the events
consumer must run in one of them only: it applies each gateway's reports in the order they were written, which
two consumers sharing the stream would not keep. :class:`Elected` runs such work while its process holds a
PostgreSQL advisory lock, on a connection of its own (autocommit: no transaction stays open). No process is
special: the lock goes with the connection, so when the holder ends, is killed or loses the database, another
process takes the lock and starts the work within ``retry`` seconds; the work (a stream consumer) resumes from
what the last holder left pending.

The other background tasks need no election: the outbox relay and the reconciler take a transaction-level
advisory lock per pass, the trade back-fill one per pass as well, and the metrics monitor only reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.logging import get_logger

log = get_logger(__name__)

# Advisory lock keys of the management server's background work (one namespace with migrations' and tasks' keys,
# which hash names: these small numbers can't meet them in practice).
EVENTS_CONSUMER_LOCK = 72_610_001
OUTBOX_RELAY_LOCK = 72_610_002
TRADE_SYNC_LOCK = 72_610_003


class Work(Protocol):
    def start(self) -> Any: ...

    async def stop(self) -> None: ...


class Elected:
    """Runs the work ``make`` builds while this process holds advisory lock ``key`` (a fresh one each time it takes
    over); ``holding`` says whether it does now."""

    def __init__(self, engine: AsyncEngine, name: str, key: int, make: Callable[[], Work], retry: float = 2.0) -> None:
        self.engine = engine
        self.name = name
        self.key = key
        self.make = make
        self.retry = retry
        self.holding = False
        self.work: Work | None = None
        self.terms = 0  # how many times this process took over
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"elected:{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    if await conn.scalar(select(func.pg_try_advisory_lock(self.key))):
                        await self._hold(conn)
            except Exception as exc:  # the database away: try again
                log.warning("election failed; retrying", work=self.name, error=f"{type(exc).__name__}: {exc}")
            await self._sleep(self.retry)

    async def _hold(self, conn: AsyncConnection) -> None:
        self.holding = True
        self.terms += 1
        self.work = self.make()
        log.info("running here (this process holds its lock)", work=self.name)
        self.work.start()
        try:
            while not self._stopping.is_set():
                await self._sleep(self.retry)
                await conn.execute(text("SELECT 1"))  # a broken connection has lost the lock: stop the work
        finally:
            self.holding = False
            await self.work.stop()
            log.info("stopped here", work=self.name)
            with contextlib.suppress(Exception):  # the connection goes back to the pool: the lock must not
                await conn.scalar(select(func.pg_advisory_unlock(self.key)))
