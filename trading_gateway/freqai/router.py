"""``GET /api/v1/bots/{bot_id}/predictions`` (a bot's latest FreqAI outputs) and ``.../models`` (its installs).

Admin or service tokens with the ``read`` scope, like ``GET /api/v1/bots``; the management server proxies
the predictions for its users.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from shared.freqai.predictions import InstalledModelOut, PredictionOut, PredictionsOut
from trading_gateway.auth import Reader
from trading_gateway.bots.client import BotApiError
from trading_gateway.fleet.bot import ManagedBot
from trading_gateway.fleet.schemas import ErrorOut
from trading_gateway.fleet.service import Fleet
from trading_gateway.freqai.schemas import BotModelsOut
from trading_gateway.freqai.service import ModelRefused, ModelService

router = APIRouter(prefix="/api/v1", tags=["models"])

PAIR = r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Not authenticated, or the token is invalid or expired",
        403: "Not an admin or service token, or the token lacks the scope",
        404: "This gateway has no such bot",
        409: "The bot is not running, or does not trade the pair",
        422: "A parameter is not acceptable; the detail says why",
        502: "The bot did not answer",
        503: "Signing keys or the token store are unavailable; try again shortly",
    }
    return {code: {"model": ErrorOut, "description": descriptions[code]} for code in codes}


def _bot(request: Request, bot_id: uuid.UUID) -> tuple[Fleet, ManagedBot, ModelService]:
    fleet: Fleet = request.app.state.fleet
    bot = fleet.bot(bot_id)
    if bot is None:
        raise HTTPException(404, f"This gateway ({fleet.settings.gateway_id}) has no bot {bot_id}.")
    return fleet, bot, fleet.models


@router.get(
    "/bots/{bot_id}/predictions",
    summary="The bot's newest FreqAI outputs per pair, read from the running bot",
    responses=_errors(401, 403, 404, 409, 422, 502, 503),
)
async def bot_predictions(
    bot_id: uuid.UUID,
    request: Request,
    principal: Reader,
    pair: Annotated[
        str | None, Query(pattern=PAIR, description="One pair, e.g. BTC/USDT; every pair when left out.")
    ] = None,
) -> PredictionsOut:
    fleet, bot, models = _bot(request, bot_id)
    if not models.runs_freqai(bot):
        raise HTTPException(409, f"Bot {bot_id} does not run FreqAI (no freqai section, no model).")
    try:
        found = await models.predictions(bot, pair)
    except ModelRefused as exc:
        raise HTTPException(409, str(exc)) from None
    except BotApiError as exc:
        raise HTTPException(502, f"Bot {bot_id} did not answer: {exc}") from None
    history = models.history(bot)
    assert bot.spec is not None  # predictions needs it
    return PredictionsOut(
        gateway_id=fleet.settings.gateway_id,
        bot_id=bot_id,
        timeframe=bot.spec.timeframe,
        model=InstalledModelOut.model_validate(history[-1].model_dump()) if history else None,
        predictions=[
            PredictionOut(
                pair=p.pair,
                candle_time=p.candle_time,
                predictions=p.predictions,
                do_predict=p.do_predict,
                DI_values=p.di_values,
                model_id=p.model_id,
                model_version=p.model_version,
                model_sha256=p.model_sha256,
            )
            for p in found
        ],
    )


@router.get(
    "/bots/{bot_id}/models",
    summary="The model versions installed for the bot on this gateway, newest first",
    responses=_errors(401, 403, 404, 503),
)
async def bot_models(bot_id: uuid.UUID, request: Request, principal: Reader) -> BotModelsOut:
    fleet, bot, models = _bot(request, bot_id)
    return BotModelsOut(
        gateway_id=fleet.settings.gateway_id,
        bot_id=bot_id,
        history=[InstalledModelOut.model_validate(r.model_dump()) for r in reversed(models.history(bot))],
    )
