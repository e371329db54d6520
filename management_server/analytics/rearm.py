"""Re-arming the risk guard when a trader starts or resumes a bot it paused (see ``risk.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from management_server.analytics.models import UserRiskState
from management_server.bots.models import Bot


async def rearm(session: AsyncSession, bot: Bot) -> None:
    """A start or resume of a bot the guard paused: its (and its owner's) high-water mark starts over now."""
    if bot.risk_reason is None:
        return
    now = datetime.now(UTC)
    bot.risk_baseline_at = now
    bot.risk_reason = None
    state = await session.get(UserRiskState, bot.owner_id, with_for_update=True)
    if state is not None and state.breached_at is not None:
        state.baseline_at = now
        state.breached_at = None
        state.reason = None
