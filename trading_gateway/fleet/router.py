"""``GET /api/v1/bots`` (actual state), ``GET /api/v1/bots/{bot_id}/trades`` (a bot's closed trades),
``GET /api/v1/bots/{bot_id}/logs`` (its last log lines) and ``POST /api/v1/emergency-stop`` (the local kill
switch)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from shared.logging import get_logger
from trading_gateway.auth import EmergencyOperator, Reader
from trading_gateway.fleet.history import closed_trades
from trading_gateway.fleet.logs import MAX_LINES, bot_log
from trading_gateway.fleet.schemas import (
    BotLogOut,
    BotOut,
    BotsOut,
    BotTradesOut,
    EmergencyStopIn,
    EmergencyStopOut,
    ErrorOut,
)
from trading_gateway.fleet.service import Fleet

log = get_logger(__name__)

router = APIRouter(prefix="/api/v1", tags=["fleet"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Not authenticated, or the token is invalid or expired",
        403: "Not an admin or service token, or the token lacks the scope",
        404: "This gateway has no such bot",
        422: "The body is not acceptable; the detail says why",
        503: "Signing keys or the token store are unavailable; try again shortly",
    }
    return {code: {"model": ErrorOut, "description": descriptions[code]} for code in codes}


def _fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


@router.get("/bots", summary="The bots this gateway runs, as they are", responses=_errors(401, 403, 503))
async def list_bots(request: Request, principal: Reader) -> BotsOut:
    fleet = _fleet(request)
    return BotsOut(
        gateway_id=fleet.settings.gateway_id,
        bots=[BotOut.model_validate(dataclasses.asdict(view)) for view in fleet.views()],
    )


@router.get(
    "/bots/{bot_id}/trades",
    summary="A bot's closed trades, from its API or its database (the management server fills gaps with them)",
    responses=_errors(401, 403, 404, 503),
)
async def bot_trades(bot_id: uuid.UUID, request: Request, principal: Reader) -> BotTradesOut:
    fleet = _fleet(request)
    found = await closed_trades(fleet, bot_id)
    if found is None:
        raise HTTPException(404, f"This gateway ({fleet.settings.gateway_id}) has no bot {bot_id}.")
    source, trades = found
    return BotTradesOut(gateway_id=fleet.settings.gateway_id, bot_id=bot_id, source=source, trades=trades)


@router.get(
    "/bots/{bot_id}/logs",
    summary="A bot's last log lines, its secrets taken out (the management server's /bots/{id}/logs reads them here)",
    responses=_errors(401, 403, 404, 503),
)
async def bot_logs(
    bot_id: uuid.UUID, request: Request, principal: Reader, lines: Annotated[int, Query(ge=1, le=MAX_LINES)] = 100
) -> BotLogOut:
    fleet = _fleet(request)
    found = await bot_log(fleet, bot_id, lines)
    if found is None:
        raise HTTPException(404, f"This gateway ({fleet.settings.gateway_id}) has no bot {bot_id}.")
    source, read = found
    return BotLogOut(gateway_id=fleet.settings.gateway_id, bot_id=bot_id, source=source, lines=read)


@router.post(
    "/emergency-stop",
    summary="Halt bots now: stop entries, exit every open trade, stop, terminate (works without Redis)",
    responses=_errors(401, 403, 503),
)
async def emergency_stop(body: EmergencyStopIn, request: Request, principal: EmergencyOperator) -> EmergencyStopOut:
    fleet = _fleet(request)
    requested_by = f"{principal.role}:{principal.subject}"
    log.warning("local emergency stop requested", requested_by=requested_by, bot_ids=body.bot_ids, scope=body.scope)
    data = await fleet.emergency_stop(
        None if body.scope == "all" else body.bot_ids,
        requested_by=requested_by,
        reason="local emergency stop (POST /api/v1/emergency-stop)",
    )
    return EmergencyStopOut(
        gateway_id=data.gateway_id,
        seconds=data.seconds,
        seconds_to_all_paused=data.seconds_to_all_paused,
        seconds_to_all_exited=data.seconds_to_all_exited,
        results=data.results,
    )
