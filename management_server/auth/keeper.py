"""Keeps the token revocations in Redis, where every process that checks a token reads them (the gateways too).

They are the database's, written to Redis (``AuthService.sync_revocations``) at each start; but Redis can lose them
while the management server runs: a ``FLUSHALL``, a restart without persistence, a Sentinel failover to a replica
that had not received the last writes. A revoked personal access token would then work again at every gateway
until the next start. So every management process checks, every ``CHECK_SECONDS``, that the mark the last sync
left is there, and writes everything again at once when it is not; and writes everything again every
``FULL_SECONDS`` anyway (a failover can lose the last revocation and keep the mark). Writing twice is harmless:
several processes may do it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.auth.service import AuthService
from shared.logging import get_logger

log = get_logger(__name__)

CHECK_SECONDS = 2.0
FULL_SECONDS = 300.0


class RevocationKeeper:
    def __init__(
        self,
        auth: AuthService,
        sessionmaker: async_sessionmaker[AsyncSession],
        check_seconds: float = CHECK_SECONDS,
        full_seconds: float = FULL_SECONDS,
    ) -> None:
        self.auth = auth
        self.sessionmaker = sessionmaker
        self.check_seconds = check_seconds
        self.full_seconds = full_seconds
        self.rewrites = 0  # after Redis had lost them
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="revocation-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sync(self) -> None:
        async with self.sessionmaker() as session:
            await self.auth.sync_revocations(session)

    async def _run(self) -> None:
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                lost = not await self.auth.revocations_in_redis()
                if lost or time.monotonic() - last_full >= self.full_seconds:
                    await self.sync()
                    last_full = time.monotonic()
                    if lost:
                        self.rewrites += 1
                        log.warning("token revocations were gone from redis: written again from the database")
            except Exception as exc:  # Redis or the database away: the next check tries again
                log.info("token revocations not checked", error=f"{type(exc).__name__}: {exc}")
