"""This gateway's leases on its bots (``FREQFLEET_LEASE_SECONDS``; the keys and scripts are ``shared/bus/leases.py``).

Every fifth of the lease the keeper renews, in one script, the lease of every bot that should run here or still has a
process. A bot the management server now says another gateway holds is stopped here (``desired`` stopped, with the
new holder as the reason) and never started again by this gateway. The supervisor asks :meth:`LeaseKeeper.may_start`
before every start: a renewal that includes the bot, right then; no start without it. A gateway that can't renew
(Redis away, the network cut) stops its bots' processes once 60 % of the lease has gone by without a renewal
(:meth:`must_stop`: Freqtrade's own stop, then the process ends), well before the lease ends and the management
server may place the bot elsewhere; they start again here only after a renewal says it still holds them. A gateway
that is frozen renews nothing and stops nothing: that case is for the bots' own watchdog (``shared/watchdog.py``),
which reads the lease file the keeper writes for each bot after each renewal (``BotFiles.lease``) and ends the bot's
process at 75 % of the lease without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from shared import watchdog
from shared.bus.leases import Holder, Renewal, renew
from shared.logging import get_logger
from trading_gateway.fleet.bot import RUNNING_STATES, ManagedBot

log = get_logger(__name__)

RENEWALS_PER_LEASE = 5
STOP_AFTER = 0.6  # of the lease without a renewal: the gateway stops its bots' processes


class LeaseKeeper:
    def __init__(self, redis: Any, gateway_id: str, bots: dict[str, ManagedBot], ttl: float) -> None:
        self.redis = redis
        self.gateway_id = gateway_id
        self.bots = bots  # the fleet's bots, by id (read, never changed here)
        self.ttl = ttl
        self.interval = ttl / RENEWALS_PER_LEASE
        self.renewed_at: float | None = None  # monotonic time of the last renewal that went through
        self.lost: dict[str, Holder] = {}  # bots another gateway holds now: never started here again
        self.on_lost: Callable[[uuid.UUID, Holder], Awaitable[None]] | None = None  # the fleet stops the bot
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def held(self) -> dict[str, int]:
        """The bots this gateway claims: those that should run here or still have a process, by generation."""
        return {
            bot_id: bot.generation
            for bot_id, bot in self.bots.items()
            if bot_id not in self.lost and (bot.desired in RUNNING_STATES or bot.process is not None)
        }

    async def renew_now(self, starting: ManagedBot | None = None) -> Renewal | None:
        """One renewal of every held bot's lease (and of ``starting``'s, whatever it was before), then their lease
        files; None when Redis could not be asked."""
        async with self._lock:
            bots = self.held()
            if starting is not None:
                bots[starting.bot_id] = starting.generation
            asked_at, asked_at_boot = time.monotonic(), watchdog.now()  # before: the lease runs from then at the latest
            try:
                renewal = await renew(self.redis, self.gateway_id, bots, int(self.ttl * 1000))
            except (RedisError, OSError) as exc:
                log.warning("leases not renewed", error=f"{type(exc).__name__}: {exc}", since=self.silent_for())
                return None
            self.renewed_at = asked_at
            await asyncio.to_thread(self._write_files, [b for b in bots if b not in renewal.lost], asked_at_boot)
            await asyncio.to_thread(self._remove_files, list(renewal.lost))
        if starting is not None and starting.bot_id not in renewal.lost:
            self.lost.pop(starting.bot_id, None)  # placed here again by the management server
        for bot_id, holder in renewal.lost.items():
            if bot_id in self.lost:
                continue
            self.lost[bot_id] = holder
            log.warning("bot held by another gateway now: stopping it here", bot_id=bot_id, holder=str(holder))
            if self.on_lost is not None:
                await self.on_lost(uuid.UUID(bot_id), holder)
        return renewal

    def _write_files(self, bot_ids: list[str], renewed_at: float) -> None:
        """Each bot's lease file, which its watchdog reads (``shared/watchdog.py``)."""
        for bot_id in bot_ids:
            if (bot := self.bots.get(bot_id)) is None:
                continue
            try:
                watchdog.write_lease(bot.files.lease, bot_id, renewed_at, self.ttl)
            except OSError as exc:  # its watchdog will end it: said here why
                log.error("lease file not written", bot_id=bot_id, error=f"{type(exc).__name__}: {exc}")

    def _remove_files(self, bot_ids: list[str]) -> None:
        """Held elsewhere now: a process of it still here ends at its watchdog's next check."""
        for bot_id in bot_ids:
            if (bot := self.bots.get(bot_id)) is not None:
                with contextlib.suppress(FileNotFoundError):
                    bot.files.lease.unlink()

    def silent_for(self) -> float | None:
        """Seconds since the last renewal that went through (None: none yet)."""
        return None if self.renewed_at is None else time.monotonic() - self.renewed_at

    def must_stop(self) -> bool:
        """The bots' processes must end: too long without a renewal."""
        silent = self.silent_for()
        return silent is not None and silent > self.ttl * STOP_AFTER

    async def may_start(self, bot: ManagedBot) -> str | None:
        """None when ``bot`` may start now (a renewal that includes it went through); else why not."""
        renewal = await self.renew_now(starting=bot)
        if renewal is None:
            return "its lease can't be renewed (Redis does not answer): it starts once it can"
        if bot.bot_id in renewal.lost:
            holder = renewal.lost[bot.bot_id]
            return f"gateway {holder.gateway_id} holds it since generation {holder.generation}"
        return None

    async def release(self) -> None:
        """Give every lease up (the gateway stopped its bots on purpose, at its shutdown): nothing is left to expire,
        so nothing is failed over; the bots start again where the management server places them next."""
        with contextlib.suppress(RedisError, OSError):
            await renew(self.redis, self.gateway_id, {}, int(self.ttl * 1000))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.renew_now()
                if self.must_stop():
                    for bot in self.bots.values():  # their supervisors stop the processes (Supervisor._step)
                        if bot.process is not None:
                            bot.wake.set()
            except Exception:
                log.exception("lease renewal failed")
            await asyncio.sleep(self.interval)
