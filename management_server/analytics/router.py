"""/api/v1/analytics: a bot's figures, and the fleet's (a user's own bots; everyone's for an admin)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from management_server.analytics import service
from management_server.analytics.cache import FLEET_SCOPE, bot_scope, user_scope
from management_server.analytics.schemas import BotAnalyticsOut, FleetAnalyticsOut
from management_server.auth.deps import Reader
from management_server.bots.deps import VisibleBot
from management_server.db import SessionDep
from management_server.deps import AnalyticsCacheDep
from management_server.errors import Refused, errors

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"], responses=errors(401, 403, 404, 429))

CACHE_HEADER = "X-Analytics-Cache"


def _answer(body: str, cached: bool) -> Response:
    return Response(content=body, media_type="application/json", headers={CACHE_HEADER: "hit" if cached else "miss"})


@router.get("/bots/{bot_id}", response_model=BotAnalyticsOut)
async def bot_analytics(bot: VisibleBot, session: SessionDep, cache: AnalyticsCacheDep) -> Response:
    """A bot's trade counts, win rate, profit, drawdown, Sharpe, Sortino, Calmar, best and worst pair, daily P&L
    and equity curve, computed as Freqtrade computes its own `/profit`. Cached until the bot's next trade."""

    async def compute() -> str:
        return (await service.bot_analytics(session, bot)).model_dump_json()

    body, cached = await cache.get_or_compute(bot_scope(bot.id), "all", compute)
    return _answer(body, cached)


@router.get("/fleet", response_model=FleetAnalyticsOut, responses=errors(400))
async def fleet_analytics(
    session: SessionDep,
    principal: Reader,
    cache: AnalyticsCacheDep,
    user_id: Annotated[
        uuid.UUID | None, Query(description="Only this user's bots (admins: anyone; others: themselves).")
    ] = None,
    stake_currency: Annotated[
        str | None,
        Query(pattern=r"^[A-Z0-9]{1,20}$", description="Bots of this stake currency (default: that of most bots)."),
    ] = None,
) -> Response:
    """The same figures over many bots' trades: yours (an admin: every bot, or one user's with `user_id`),
    with a line per bot (and per user for the whole fleet)."""
    try:
        owner = await service.fleet_owner(session, principal.viewer, user_id)
    except Refused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    scope = FLEET_SCOPE if owner is None else user_scope(owner)

    async def compute() -> str:
        return (await service.fleet_analytics(session, owner, stake_currency)).model_dump_json()

    body, cached = await cache.get_or_compute(scope, f"currency={stake_currency or '*'}", compute)
    return _answer(body, cached)
