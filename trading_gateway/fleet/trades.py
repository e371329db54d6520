"""TRADE_OPENED / TRADE_CLOSED: each trade of a bot reported once, under an id that never changes.

The health poller hands every snapshot of a bot's open trades to its :class:`TradeReporter`. A trade
is reported opened once its entry order has filled (``nr_of_successful_entries``); closed trades
come from the bot's ``/trades`` history, read only when a reported trade has left the open list or
Freqtrade counts more closed trades than were reported. A trade that opened and closed between two
polls is reported opened, then closed.

Decisions:

- The ``event_id`` of a trade event is ``uuid5(bot id, trade id, kind)``: a re-sent event (a gateway
  restart, an outbox flushed twice) has the id of the first, which the management server's dedupe
  recognises.
- What was reported is kept in the bot's folder (``reported-trades.json``), written after the
  publish: a crash in between sends an event again (same id), never loses one. So a restarted or new
  gateway does not replay a bot's whole history.
- Once a bot's process has ended (stopped, crashed, emergency-stopped) its API is gone: the closed
  trades it left in its SQLite database are swept from there (read-only; WAL readers never block),
  so trades closed by an emergency stop are reported too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from shared.bus.messages import Envelope, TradeClosed, TradeClosedData, TradeOpened, TradeOpenedData
from shared.files import atomic_write
from shared.logging import get_logger
from trading_gateway.bots.client import FreqtradeClient
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.trade_store import read_rows

log = get_logger(__name__)

TRADE_EVENTS = uuid.UUID("6f0d3c55-7a57-4a4e-9a43-0b5d3c1f2e61")  # namespace of the trade events' ids
LEDGER_FILE = "reported-trades.json"
HISTORY_PAGE = 500


def trade_event_id(bot_id: uuid.UUID, trade_id: int, kind: Literal["opened", "closed"]) -> uuid.UUID:
    return uuid.uuid5(TRADE_EVENTS, f"{bot_id}:{trade_id}:{kind}")


def _when(trade: dict[str, Any], key: str) -> datetime | None:
    """A trade's time from its ``<key>_timestamp`` (ms) or its ``<key>_date`` (naive UTC text, or a datetime)."""
    stamp = trade.get(f"{key}_timestamp")
    if isinstance(stamp, int | float) and stamp > 0:
        return datetime.fromtimestamp(stamp / 1000, UTC)
    text = trade.get(f"{key}_date")
    if isinstance(text, datetime):  # read from a PostgreSQL trade database (naive UTC, as Freqtrade stores it)
        return text if text.tzinfo is not None else text.replace(tzinfo=UTC)
    if isinstance(text, str) and text:
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def entry_filled(trade: dict[str, Any]) -> bool:
    return int(trade.get("nr_of_successful_entries") or 0) > 0


def _opened_data(bot_id: uuid.UUID, trade: dict[str, Any]) -> TradeOpenedData:
    open_date = _when(trade, "open")
    if open_date is None:
        raise ValueError("no open date")
    return TradeOpenedData(
        bot_id=bot_id,
        trade_id=int(trade["trade_id"]),
        pair=str(trade["pair"]),
        is_short=bool(trade.get("is_short", False)),
        open_date=open_date,
        open_rate=float(trade["open_rate"]),
        amount=float(trade["amount"]),
        stake_amount=float(trade["stake_amount"]),
        enter_tag=trade.get("enter_tag"),
    )


def opened_event(bot_id: uuid.UUID, trade: dict[str, Any], source: str) -> TradeOpened:
    data = _opened_data(bot_id, trade)
    return TradeOpened(event_id=trade_event_id(bot_id, data.trade_id, "opened"), source=source, data=data)


def closed_event(bot_id: uuid.UUID, trade: dict[str, Any], source: str) -> TradeClosed:
    opened = _opened_data(bot_id, trade)
    close_date = _when(trade, "close")
    if close_date is None:
        raise ValueError("no close date")
    data = TradeClosedData(
        **opened.model_dump(),
        close_date=close_date,
        close_rate=float(trade["close_rate"]),
        profit_abs=float(trade.get("profit_abs") or 0.0),
        profit_ratio=float(trade.get("profit_ratio") or 0.0),
        exit_reason=trade.get("exit_reason"),
    )
    return TradeClosed(event_id=trade_event_id(bot_id, data.trade_id, "closed"), source=source, data=data)


async def closed_trades_from_api(api: FreqtradeClient) -> list[dict[str, Any]]:
    """Every closed trade of the bot, by id, page by page."""
    trades: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await api.trades(limit=HISTORY_PAGE, offset=offset)
        rows = [dict(t) for t in page["trades"]]
        trades.extend(rows)
        offset += len(rows)
        if len(rows) < HISTORY_PAGE or offset >= int(page.get("total_trades") or 0):
            return trades


def closed_trades_from_db(files: BotFiles, database_url: str | None = None) -> list[dict[str, Any]] | None:
    """The closed trades in the bot's database (its SQLite file, or its PostgreSQL database at ``database_url``),
    shaped like the API's (None when it can't be read). Blocking: run it in a thread."""
    query = (
        "SELECT id, pair, is_short, open_date, open_rate, amount, stake_amount, enter_tag, close_date, close_rate, "
        "close_profit_abs, close_profit, exit_reason FROM trades WHERE NOT is_open ORDER BY id"
    )
    rows = read_rows(files, database_url, query)
    if rows is None:
        return None
    keys = (
        "trade_id",
        "pair",
        "is_short",
        "open_date",
        "open_rate",
        "amount",
        "stake_amount",
        "enter_tag",
        "close_date",
        "close_rate",
        "profit_abs",
        "profit_ratio",
        "exit_reason",
    )
    return [dict(zip(keys, row, strict=True)) | {"nr_of_successful_entries": 1} for row in rows]


class TradeReporter:
    """Reports one bot's trades, each once; remembers what it reported in the bot's folder."""

    def __init__(
        self, bot_id: uuid.UUID, folder: Path, source: str, publish: Callable[[Envelope], Awaitable[object]]
    ) -> None:
        self.bot_id = bot_id
        self.path = folder / LEDGER_FILE
        self.source = source
        self.publish = publish
        self.opened: set[int] = set()
        self.closed: set[int] = set()
        self._load()

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text())
            self.opened = {int(i) for i in doc.get("opened", [])}
            self.closed = {int(i) for i in doc.get("closed", [])}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("reported-trades file unreadable: trades may be sent again", path=str(self.path), error=str(exc))

    def _save(self) -> None:
        if not self.path.parent.exists():
            return
        doc = {"opened": sorted(self.opened), "closed": sorted(self.closed)}
        atomic_write(self.path, json.dumps(doc).encode())

    def needs_history(self, open_trades: Iterable[dict[str, Any]], profit: dict[str, Any]) -> bool:
        """Whether a trade may have closed since the last report (then read the closed trades)."""
        open_ids = {int(t["trade_id"]) for t in open_trades if "trade_id" in t}
        if (self.opened - self.closed) - open_ids:
            return True
        closed_count = profit.get("closed_trade_count")
        return isinstance(closed_count, int) and closed_count > len(self.closed)

    async def report_open(self, open_trades: Iterable[dict[str, Any]]) -> int:
        """TRADE_OPENED for the filled trades not reported yet; how many."""
        sent = 0
        for trade in sorted(open_trades, key=lambda t: int(t.get("trade_id", 0))):
            trade_id = int(trade.get("trade_id", -1))
            if trade_id < 0 or trade_id in self.opened or not entry_filled(trade):
                continue
            event = self._event(opened_event, trade)
            if event is None:
                continue
            await self.publish(event)
            self.opened.add(trade_id)
            self._save()
            sent += 1
        return sent

    async def report_closed(self, closed_trades: Iterable[dict[str, Any]]) -> int:
        """TRADE_CLOSED (preceded by TRADE_OPENED when it was never reported open) for new closed trades."""
        sent = 0
        for trade in sorted(closed_trades, key=lambda t: int(t.get("trade_id", 0))):
            trade_id = int(trade.get("trade_id", -1))
            if trade_id < 0 or trade_id in self.closed:
                continue
            closed = self._event(closed_event, trade)
            if closed is None:
                continue
            if trade_id not in self.opened:
                opened = self._event(opened_event, trade)
                if opened is not None:
                    await self.publish(opened)
                    self.opened.add(trade_id)
            await self.publish(closed)
            self.closed.add(trade_id)
            self._save()
            sent += 1
        return sent

    def _event(
        self, build: Callable[[uuid.UUID, dict[str, Any], str], Envelope], trade: dict[str, Any]
    ) -> Envelope | None:
        try:
            return build(self.bot_id, trade, self.source)
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            log.error(
                "trade not reportable", bot_id=str(self.bot_id), trade_id=trade.get("trade_id"), error=str(exc)[:300]
            )
            return None
