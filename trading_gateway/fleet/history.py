"""A bot's closed trades as its gateway can read them now, for ``GET /api/v1/bots/{bot_id}/trades``.

The management server reads them when it has fewer closed trades of a bot than the bot's own
``/profit`` counts (an event it missed: dead-lettered, trimmed, or lost with a gateway's outbox).
From the bot's REST API while it runs, from its SQLite database (read-only) when it does not; each
trade shaped exactly as in TRADE_CLOSED.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Literal

from pydantic import ValidationError

from shared.bus.messages import TradeClosedData
from shared.logging import get_logger
from trading_gateway.bots.client import BotApiError
from trading_gateway.bots.trade_store import database_url_of
from trading_gateway.fleet.service import Fleet
from trading_gateway.fleet.trades import closed_event, closed_trades_from_api, closed_trades_from_db

log = get_logger(__name__)

Source = Literal["api", "database", "none"]


async def closed_trades(fleet: Fleet, bot_id: uuid.UUID) -> tuple[Source, list[TradeClosedData]] | None:
    """Where they were read and the trades, oldest first; None when this gateway has no such bot."""
    bot = fleet.bot(bot_id)
    if bot is None:
        return None
    rows = None
    source: Source = "none"
    api, process = bot.api, bot.process
    if api is not None and process is not None and process.is_alive():
        try:
            rows = await closed_trades_from_api(api)
            source = "api"
        except BotApiError as exc:
            log.info("closed trades not readable from the bot's API; reading its database", error=str(exc))
    if rows is None:
        url = database_url_of(bot.spec, bot.bot_id, fleet.identity)
        rows = await asyncio.to_thread(closed_trades_from_db, bot.files, url)
        source = "database" if rows is not None else "none"
    trades: list[TradeClosedData] = []
    for row in rows or []:
        try:
            trades.append(closed_event(bot.uuid, row, fleet.source).data)
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            log.warning("closed trade not readable", trade_id=row.get("trade_id"), error=str(exc)[:300])
    trades.sort(key=lambda t: t.trade_id)
    return source, trades
