"""What follows a recorded trade, and trades filled in when an event was missed.

:class:`TradeEffects` runs after a TRADE_OPENED / TRADE_CLOSED is applied: the risk guard in the
same transaction (a closed trade only), then, after the commit, the analytics answers it changes
are made stale and the guard's alerts raised. A failing guard is logged and does not block the
trade from being recorded (it runs in a savepoint); a failing Redis leaves the event pending, to be
applied again (idempotent).

:class:`TradeSync` looks every ``trade_sync_interval`` seconds for bots whose own ``/profit`` (in
their last BOT_STATUS) counts more closed trades than the management server has, reads those
bots' closed trades from their gateway (``GET /api/v1/bots/{id}/trades``, with a service token),
and applies each as the TRADE_CLOSED it would have been (same effects, nothing twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.analytics.cache import AnalyticsCache
from management_server.analytics.risk import RiskGuard, Verdict
from management_server.bots import events as bot_events
from management_server.bots.models import Bot, Trade
from management_server.elected import TRADE_SYNC_LOCK
from management_server.gateways.client import GatewayClient, GatewayUnavailable
from management_server.gateways.models import Gateway
from shared.bus.messages import Envelope, TradeClosed, TradeClosedData, TradeOpened
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass
class Followup:
    bot_id: uuid.UUID
    owner_id: uuid.UUID
    verdict: Verdict
    cause: uuid.UUID | None


class TradeEffects:
    def __init__(self, cache: AnalyticsCache, guard: RiskGuard | None) -> None:
        self.cache = cache
        self.guard = guard

    async def in_transaction(self, session: AsyncSession, message: Envelope) -> Followup | None:
        """After the trade of ``message`` was applied in ``session``: the guard's pauses (uncommitted)."""
        if not isinstance(message, TradeOpened | TradeClosed):
            return None
        bot = await session.get(Bot, message.data.bot_id)
        if bot is None:
            return None
        verdict = Verdict()
        if isinstance(message, TradeClosed) and self.guard is not None:
            try:
                async with session.begin_nested():
                    verdict = await self.guard.check(session, bot.id)
            except Exception:
                log.exception("risk guard check failed; the trade is recorded without it", bot_id=str(bot.id))
                verdict = Verdict()
        return Followup(bot.id, bot.owner_id, verdict, message.event_id)

    async def after_commit(self, followup: Followup | None) -> None:
        if followup is None:
            return
        await self.cache.invalidate(followup.bot_id, followup.owner_id)
        if self.guard is not None and followup.verdict.paused:
            await self.guard.report(followup.verdict, followup.cause)


class TradeSync:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateways: GatewayClient,
        effects: TradeEffects,
        interval: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.gateways = gateways
        self.effects = effects
        self.interval = interval
        self.filled = 0
        self._task: asyncio.Task[None] | None = None

    async def gaps(self) -> list[tuple[uuid.UUID, str, str]]:
        """Bots missing closed trades, with the API URL of their gateway."""
        async with self.sessionmaker() as session:
            ours = dict(
                (
                    await session.execute(
                        select(Trade.bot_id, func.count()).where(Trade.is_open.is_(False)).group_by(Trade.bot_id)
                    )
                ).all()
            )
            rows = await session.execute(
                select(Bot.id, Bot.last_status, Gateway.gateway_id, Gateway.api_url)
                .join(Gateway, Gateway.gateway_id == Bot.gateway_id)
                .where(
                    Bot.last_status.is_not(None),
                    Gateway.api_url.is_not(None),
                    Gateway.signing_key.is_not(None),  # service tokens go only to enrolled gateways
                    Gateway.revoked_at.is_(None),
                )
            )
            found = []
            for bot_id, status, gateway_id, api_url in rows:
                profit = status.get("profit") if isinstance(status, dict) else None
                theirs = profit.get("closed_trade_count") if isinstance(profit, dict) else None
                if isinstance(theirs, int) and theirs > ours.get(bot_id, 0) and api_url:
                    found.append((bot_id, str(gateway_id), str(api_url)))
            return found

    async def fill(self, bot_id: uuid.UUID, gateway_id: str, api_url: str) -> int:
        """Apply the bot's closed trades we don't have; how many were new."""
        answer = await self.gateways.closed_trades(gateway_id, api_url, bot_id)
        trades = [TradeClosedData.model_validate(t) for t in answer["trades"]]
        async with self.sessionmaker() as session:
            known = set(
                (
                    await session.execute(
                        select(Trade.trade_id).where(Trade.bot_id == bot_id, Trade.is_open.is_(False))
                    )
                ).scalars()
            )
        missing = [t for t in trades if t.trade_id not in known and t.bot_id == bot_id]
        source = f"gateway:{answer.get('gateway_id', 'unknown')}"
        for data in missing:
            message = TradeClosed(source=source, data=data)
            async with self.sessionmaker.begin() as session:
                await bot_events.apply(session, message)
                followup = await self.effects.in_transaction(session, message)
            await self.effects.after_commit(followup)
        if missing:
            log.warning(
                "closed trades filled in from the gateway (their events were missed)",
                bot_id=str(bot_id),
                count=len(missing),
                trade_ids=[t.trade_id for t in missing][:50],
            )
        self.filled += len(missing)
        return len(missing)

    async def run_once(self) -> int:
        """One round: fill in every bot's missed trades. One process at a time, of every management process (an
        advisory lock held by a transaction of its own for the round): two rounds side by side would apply a
        missed trade twice (once each, by the risk guard and the analytics too)."""
        filled = 0
        async with self.sessionmaker() as held, held.begin():
            if not await held.scalar(select(func.pg_try_advisory_xact_lock(TRADE_SYNC_LOCK))):
                return 0  # another process is at it
            for bot_id, gateway_id, api_url in await self.gaps():
                try:
                    filled += await self.fill(bot_id, gateway_id, api_url)
                except GatewayUnavailable as exc:
                    log.warning("missed trades not filled in: gateway unavailable", bot_id=str(bot_id), error=str(exc))
        return filled

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:  # the database away, a bug: the next round tries again
                log.exception("trade sync round failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="trade-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
