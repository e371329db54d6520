"""A running bot's latest FreqAI outputs, read from the bot through its gateway (``GET /api/v1/bots/{id}/predictions``
there, with a service token only that gateway accepts)."""

from __future__ import annotations

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots.models import Bot, DesiredState
from management_server.errors import Refused
from management_server.gateways.client import GatewayClient
from management_server.gateways.models import Gateway
from shared.freqai.predictions import PredictionsOut


class PredictionsUnavailable(Refused):
    """The bot's predictions can't be read now; the message says why."""


async def read(session: AsyncSession, client: GatewayClient, bot: Bot, pair: str | None) -> PredictionsOut:
    """One pair's outputs, or every pair's (``pair`` None). No transaction stays open while the gateway answers."""
    if bot.gateway_id is None or bot.desired_state not in (DesiredState.running, DesiredState.paused):
        raise PredictionsUnavailable(
            409, "The bot is not running: predictions come from a running bot. Start it first."
        )
    bot_id, gateway_id = bot.id, bot.gateway_id
    gateway = await session.get(Gateway, gateway_id)
    api_url = gateway.api_url if gateway is not None and gateway.enrolled else None  # tokens only to enrolled
    await session.rollback()
    if api_url is None:
        raise PredictionsUnavailable(503, f"Gateway {gateway_id} has not said where its API is yet: try again shortly.")
    url = f"{api_url.rstrip('/')}/api/v1/bots/{bot_id}/predictions"
    try:
        response = await client.http.get(
            url,
            params={"pair": pair} if pair else None,
            headers={"Authorization": f"Bearer {client.token(gateway_id)}"},
        )
    except httpx.HTTPError as exc:
        raise PredictionsUnavailable(
            503, f"Gateway {gateway_id} did not answer ({type(exc).__name__}): try again."
        ) from None
    detail = _detail(response)
    if response.status_code == 404:
        raise PredictionsUnavailable(409, f"Gateway {gateway_id} does not run this bot (yet): {detail}")
    if response.status_code in (409, 422):
        raise PredictionsUnavailable(409 if response.status_code == 409 else 400, detail)
    if response.status_code != 200:
        raise PredictionsUnavailable(502, f"Gateway {gateway_id} answered {response.status_code}: {detail}")
    try:
        return PredictionsOut.model_validate(response.json())
    except (ValueError, ValidationError):
        raise PredictionsUnavailable(502, f"Gateway {gateway_id} answered something that is not predictions.") from None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail)[:1000] if detail is not None else response.text[:300]
