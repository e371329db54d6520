"""A bot's log lines over REST: read on the gateway that runs it (``GET /api/v1/bots/{id}/logs`` there, with a
service token only that gateway accepts), once or followed as Server-Sent Events.

Following polls the gateway every ``interval`` seconds for the last lines and sends the ones after what it sent
before (found by the last lines it sent). A bot that writes more than a window between two polls leaves a
gap, said as such (``event: gap``) rather than hidden. A gateway that does not answer is said too (``event:
error``); the stream goes on and tries again. It ends when the client goes, or after ``max_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots.models import Bot
from management_server.errors import Refused
from management_server.gateways.client import GatewayClient, GatewayUnavailable
from management_server.gateways.models import Gateway

FOLLOW_WINDOW = 200  # lines read at each poll while following
MAX_FOLLOW_SECONDS = 3600.0


class LogUnavailable(Refused):
    """The bot's log can't be read now."""


async def where(session: AsyncSession, bot: Bot) -> tuple[str, str]:
    """The gateway that has the bot's log, and its API's URL."""
    if bot.gateway_id is None:
        raise LogUnavailable(409, "The bot has never been started: it has no log yet.")
    gateway = await session.get(Gateway, bot.gateway_id)
    if gateway is None or not gateway.enrolled:
        raise LogUnavailable(409, f"The bot's gateway {bot.gateway_id} is not enrolled: its log can't be read.")
    if gateway.api_url is None:
        raise LogUnavailable(
            503, f"Gateway {bot.gateway_id} has not said where its API is (FREQFLEET_GATEWAY_API_URL): try again soon."
        )
    return gateway.gateway_id, gateway.api_url


async def read(client: GatewayClient, gateway_id: str, api_url: str, bot_id: uuid.UUID, lines: int) -> dict[str, Any]:
    try:
        body = await client.bot_log(gateway_id, api_url, bot_id, lines)
    except GatewayUnavailable as exc:
        raise LogUnavailable(503, f"Gateway {gateway_id} did not give the bot's log: {exc}") from None
    return {
        "bot_id": str(bot_id),
        "gateway_id": gateway_id,
        "source": str(body.get("source", "")),
        "lines": [str(x) for x in body["lines"]],
    }


def new_lines(before: list[str], now: list[str]) -> tuple[list[str], bool]:
    """The lines of ``now`` after the last ones of ``before`` (found by its last 20 lines, latest place first), and
    whether some may have been missed in between (``before``'s end is no longer in ``now``)."""
    if not before:
        return now, False
    tail = before[-min(len(before), 20) :]
    for start in range(len(now) - len(tail), -1, -1):
        if now[start : start + len(tail)] == tail:
            return now[start + len(tail) :], False
    return now, True


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def follow(
    client: GatewayClient,
    gateway_id: str,
    api_url: str,
    bot_id: uuid.UUID,
    lines: int,
    gone: Callable[[], Awaitable[bool]],
    *,
    interval: float = 2.0,
    max_seconds: float = MAX_FOLLOW_SECONDS,
) -> AsyncIterator[str]:
    """Server-Sent Events: the last ``lines`` lines, then each new line as it comes (``event: line``)."""
    deadline = time.monotonic() + max_seconds
    sent: list[str] = []
    first = True
    while time.monotonic() < deadline and not await gone():
        try:
            body = await client.bot_log(gateway_id, api_url, bot_id, lines if first else max(lines, FOLLOW_WINDOW))
        except GatewayUnavailable as exc:
            yield _event("error", {"message": f"Gateway {gateway_id} did not answer: {exc}"[:500]})
        else:
            window = [str(x) for x in body["lines"]]
            fresh, gap = new_lines(sent, window)
            if gap:
                yield _event("gap", {"message": "more lines were written than one read holds: some are not shown"})
            for line in fresh:
                yield _event("line", {"line": line})
            if not fresh and not gap:
                yield ": nothing new\n\n"  # keeps proxies from closing an idle stream
            sent = window
            first = False
        await asyncio.sleep(interval)
    yield _event("end", {"message": "the stream ends: ask again to go on following"})
