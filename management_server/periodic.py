"""Background work that runs every few seconds in each management process (the reconciler, the failover check): one
task, started in the app's lifespan, stopped before the app's resources are closed. A round that fails (the database
or Redis away) is logged, and the next round tries again; whoever must be alone in a round takes a lock in it."""

from __future__ import annotations

import asyncio
import contextlib

from shared.logging import get_logger

log = get_logger(__name__)


class Periodic:
    name = "periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        """One round (the interval is waited before each)."""
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
                return
            try:
                await self.tick()
            except Exception as exc:
                log.warning(f"{self.name} round failed", error=f"{type(exc).__name__}: {exc}")
