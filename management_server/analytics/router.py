"""/api/v1/analytics: a bot's figures, and the fleet's (a user's own bots; everyone's for an admin)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from management_server.analytics import service
from management_server.analytics.cache import FLEET_SCOPE, AnalyticsCache, bot_scope, user_scope
from management_server.analytics.schemas import BotAnalyticsOut, FleetAnalyticsOut
from management_server.auth.deps import Reader
from management_server.bots import service as bots
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.users.models import User

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"], responses=errors(401, 403, 404, 429))

CACHE_HEADER = "X-Analytics-Cache"


def _cache(request: Request) -> AnalyticsCache:
    cache: AnalyticsCache = request.app.state.analytics_cache
    return cache


def _answer(body: str, cached: bool) -> Response:
    return Response(content=body, media_type="application/json", headers={CACHE_HEADER: "hit" if cached else "miss"})


@router.get("/bots/{bot_id}", response_model=BotAnalyticsOut)
async def bot_analytics(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Reader) -> Response:
    """A bot's trade counts, win rate, profit, drawdown, Sharpe, Sortino, Calmar, best and worst pair, daily P&L
    and equity curve, computed as Freqtrade computes its own `/profit`. Cached until the bot's next trade."""
    bot = await bots.visible(session, principal.viewer, bot_id)
    if bot is None:
        raise HTTPException(404, "No such bot.")

    async def compute() -> str:
        return (await service.bot_analytics(session, bot)).model_dump_json()

    body, cached = await _cache(request).get_or_compute(bot_scope(bot.id), "all", compute)
    return _answer(body, cached)


@router.get("/fleet", response_model=FleetAnalyticsOut, responses=errors(400))
async def fleet_analytics(
    request: Request,
    session: SessionDep,
    principal: Reader,
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
    user: User = principal.user
    if not principal.is_admin:
        if user_id is not None and user_id != user.id:
            raise HTTPException(404, "No such user.")
        owner: uuid.UUID | None = user.id
    else:
        owner = user_id
        if owner is not None and await session.get(User, owner) is None:
            raise HTTPException(404, "No such user.")
    scope = FLEET_SCOPE if owner is None else user_scope(owner)

    async def compute() -> str:
        return (await service.fleet_analytics(session, owner, stake_currency)).model_dump_json()

    body, cached = await _cache(request).get_or_compute(scope, f"currency={stake_currency or '*'}", compute)
    return _answer(body, cached)
