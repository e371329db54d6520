"""The risk guard: a bot, or all of a user's bots, paused when their drawdown reaches a limit.

Checked whenever a closed trade is recorded (from a TRADE_CLOSED event, or filled in from a
gateway), in the transaction that records it, so the pause is decided on the very report that
shows the breach: within one status interval of the trade closing (the gateway reports a closed
trade at its next status read).

- **Drawdown** is the *current* drawdown of closed trades, as Freqtrade measures drawdowns
  (``metrics.max_drawdown``): from the high-water mark of the cumulative profit (which starts at 0),
  relative to the starting balance plus that mark. Open trades don't count, as in Freqtrade's own
  ``MaxDrawdown`` protection: their price may still come back, and pausing does not close them.
- **Limits**: a bot's ``max_drawdown_ratio``, else ``FREQFLEET_RISK_MAX_DRAWDOWN_BOT``; for a user's
  bots together (those of the stake currency of the trade's bot), ``FREQFLEET_RISK_MAX_DRAWDOWN_USER``.
- **A breach** pauses every running bot concerned through the normal lifecycle (PAUSE_BOT through
  the outbox: Freqtrade's ``stopentry``; open trades are still managed), records the reason and the
  time on the bot (``risk_reason``, ``risk_paused_at``), and raises the alert: an audit entry
  ``risk.pause`` (actor ``risk-guard``), a warning in the log and the counter
  ``freqfleet_risk_breaches_total{scope}`` that the alert rule ``DrawdownBreach`` watches.
- **Re-arming**: starting or resuming a bot that the guard paused starts its high-water mark over
  from that moment (``risk_baseline_at``), and the user's too when the breach was the user's, so a
  trader who resumes on purpose is not paused again for the same loss; a new loss of the limit from
  there pauses again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import case, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.analytics.metrics import starting_balance_of
from management_server.analytics.models import UserRiskState
from management_server.audit.models import Outcome
from management_server.audit.service import Actor, AuditLog
from management_server.bots.lifecycle import Action, ActionRefused, act
from management_server.bots.models import Bot, DesiredState, Trade
from management_server.config import ManagementSettings
from management_server.security.crypto import MasterKeys
from shared.logging import get_logger
from shared.metrics import RISK_BREACHES

log = get_logger(__name__)

ACTOR = Actor(None, "risk-guard")


@dataclass(frozen=True)
class Exposure:
    """Where a pool of closed trades stands against its high-water mark."""

    balance: float  # starting balance of the pool
    peak: float  # highest cumulative profit since the baseline (at least the profit at the baseline)
    current: float  # cumulative profit now

    @property
    def drawdown_abs(self) -> float:
        return max(0.0, self.peak - self.current)

    @property
    def drawdown_ratio(self) -> float:
        top = self.balance + self.peak
        return self.drawdown_abs / top if top > 0 else 0.0


@dataclass
class Pause:
    bot_id: uuid.UUID
    owner_id: uuid.UUID
    scope: str  # "bot" or "user"
    reason: str
    drawdown_ratio: float
    limit: float
    generation: int
    command_id: uuid.UUID
    gateway_id: str


@dataclass
class Verdict:
    paused: list[Pause] = field(default_factory=list)


async def exposure(
    session: AsyncSession, bot_ids: list[uuid.UUID], balance: float, baseline: datetime | None
) -> Exposure:
    """The pool's cumulative closed profit now and at its peak since ``baseline`` (one query)."""
    after = Trade.close_date > baseline if baseline is not None else true()
    running = (
        func.sum(case((after, Trade.profit_abs), else_=0.0))
        .over(order_by=(Trade.close_date, Trade.id))
        .label("running")
    )
    rows = (
        select(Trade.profit_abs.label("profit"), after.label("after"), running)
        .where(Trade.bot_id.in_(bot_ids), Trade.is_open.is_(False), Trade.close_date.is_not(None))
        .subquery()
    )
    before_sum, after_sum, peak_after = (
        await session.execute(
            select(
                func.coalesce(func.sum(case((rows.c.after, 0.0), else_=rows.c.profit)), 0.0),
                func.coalesce(func.sum(case((rows.c.after, rows.c.profit), else_=0.0)), 0.0),
                func.coalesce(func.max(case((rows.c.after, rows.c.running))), 0.0),
            )
        )
    ).one()
    before = float(before_sum)
    return Exposure(balance=balance, peak=before + max(0.0, float(peak_after)), current=before + float(after_sum))


def _balance(bot: Bot) -> float | None:
    profit = (bot.last_status or {}).get("profit") if isinstance(bot.last_status, dict) else None
    return starting_balance_of(
        bot.dry_run,
        None if bot.dry_run_wallet is None else float(bot.dry_run_wallet),
        profit if isinstance(profit, dict) else None,
    )


class RiskGuard:
    def __init__(self, settings: ManagementSettings, keys: MasterKeys, audit: AuditLog) -> None:
        self.settings = settings
        self.keys = keys
        self.audit = audit

    async def check(self, session: AsyncSession, bot_id: uuid.UUID) -> Verdict:
        """After a closed trade of ``bot_id`` was recorded in ``session``: pause what breached (same transaction)."""
        verdict = Verdict()
        found = await session.get(Bot, bot_id)
        if found is None:
            return verdict
        # The owner's bots of this currency, locked in id order (one order for every handler: no deadlock).
        theirs = list(
            (
                await session.execute(
                    select(Bot)
                    .where(Bot.owner_id == found.owner_id, Bot.stake_currency == found.stake_currency)
                    .order_by(Bot.id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
            ).scalars()
        )
        bot = next(b for b in theirs if b.id == bot_id)
        limit = bot.max_drawdown_ratio if bot.max_drawdown_ratio is not None else self.settings.risk_max_drawdown_bot
        balance = _balance(bot)
        if limit is not None and balance is not None and bot.desired_state == DesiredState.running:
            seen = await exposure(session, [bot.id], balance, bot.risk_baseline_at)
            if seen.drawdown_ratio >= limit:
                reason = (
                    f"drawdown limit reached: the bot's drawdown is {seen.drawdown_ratio:.2%} "
                    f"({seen.drawdown_abs:.2f} {bot.stake_currency}) of its balance, its limit "
                    f"{limit:.2%}; it was paused (no new entries). Resume it to trade again."
                )
                await self._pause(session, bot, "bot", reason, seen.drawdown_ratio, limit, verdict)
        user_limit = self.settings.risk_max_drawdown_user
        if user_limit is not None:
            await self._check_user(session, bot, theirs, user_limit, verdict)
        return verdict

    async def _check_user(
        self, session: AsyncSession, bot: Bot, theirs: list[Bot], limit: float, verdict: Verdict
    ) -> None:
        balances = [_balance(b) for b in theirs]
        if any(b is None for b in balances):
            return
        running = [b for b in theirs if b.desired_state == DesiredState.running]
        if not running and not verdict.paused:
            return  # nothing to pause (a breach found now is recorded when it pauses something)
        state = await session.get(UserRiskState, bot.owner_id, with_for_update=True)
        baseline = state.baseline_at if state is not None else None
        total = float(sum(b for b in balances if b is not None))
        seen = await exposure(session, [b.id for b in theirs], total, baseline)
        if seen.drawdown_ratio < limit:
            return
        reason = (
            f"drawdown limit of the owner's bots reached: their drawdown together is {seen.drawdown_ratio:.2%} "
            f"({seen.drawdown_abs:.2f} {bot.stake_currency}) of their balance, the limit {limit:.2%}; all of them "
            "were paused (no new entries). Resume them to trade again."
        )
        if state is None:
            state = UserRiskState(user_id=bot.owner_id)
            session.add(state)
        state.breached_at = datetime.now(UTC)
        state.reason = reason
        for each in running:
            await self._pause(session, each, "user", reason, seen.drawdown_ratio, limit, verdict)

    async def _pause(
        self, session: AsyncSession, bot: Bot, scope: str, reason: str, ratio: float, limit: float, verdict: Verdict
    ) -> None:
        if bot.desired_state != DesiredState.running or any(p.bot_id == bot.id for p in verdict.paused):
            return
        try:
            result = await act(session, bot, Action.pause, self.keys)
        except ActionRefused as exc:
            log.warning("risk guard could not pause a bot", bot_id=str(bot.id), error=str(exc))
            return
        bot.risk_reason = reason
        bot.risk_paused_at = datetime.now(UTC)
        verdict.paused.append(
            Pause(
                bot_id=bot.id,
                owner_id=bot.owner_id,
                scope=scope,
                reason=reason,
                drawdown_ratio=ratio,
                limit=limit,
                generation=bot.generation,
                command_id=result.command.event_id,
                gateway_id=result.gateway_id,
            )
        )

    async def report(self, verdict: Verdict, cause: uuid.UUID | None) -> None:
        """After the commit: the alert (audit, log, metric) for each bot paused."""
        for pause in verdict.paused:
            RISK_BREACHES.labels(scope=pause.scope).inc()
            log.warning(
                "drawdown limit breached: bot paused",
                bot_id=str(pause.bot_id),
                scope=pause.scope,
                drawdown_ratio=round(pause.drawdown_ratio, 6),
                limit=pause.limit,
            )
            await self.audit.record(
                "risk.pause",
                Outcome.success,
                ACTOR,
                target_type="bot",
                target_id=pause.bot_id,
                reason=pause.reason,
                via="risk-guard",
                details={
                    "scope": pause.scope,
                    "drawdown_ratio": pause.drawdown_ratio,
                    "limit": pause.limit,
                    "owner_id": str(pause.owner_id),
                    "generation": pause.generation,
                    "command_id": str(pause.command_id),
                    "gateway_id": pause.gateway_id,
                    "caused_by_event": None if cause is None else str(cause),
                },
            )
