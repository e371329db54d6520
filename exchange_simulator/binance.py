"""Binance's shapes: errors, ``exchangeInfo`` symbols, kline rows, tickers and books.

Numbers are strings with eight decimals, as Binance's spot API writes them; prices are on the
market's tick grid and quantities on its lot step, so ``"65000.01000000"`` and ``"0.00120000"``.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import numpy as np

from exchange_simulator.book import OrderBook, round_price
from exchange_simulator.market import Candles, Ticker24h
from exchange_simulator.markets import MarketSpec
from exchange_simulator.noise import stream_key, uniform
from shared import timeframes as tf

TRADES_PER_MINUTE = 50  # how many trades an average minute's volume is split into


class BinanceError(Exception):
    """An error the way Binance answers it: HTTP status and ``{"code": ..., "msg": ...}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def invalid_symbol() -> BinanceError:
    return BinanceError(400, -1121, "Invalid symbol.")


def mandatory(name: str) -> BinanceError:
    return BinanceError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal(name: str, legal: str) -> BinanceError:
    return BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def not_valid(name: str) -> BinanceError:
    return BinanceError(400, -1130, f"Data sent for parameter '{name}' is not valid.")


def unsupported(method: str, path: str, status: int) -> BinanceError:
    return BinanceError(status, -1020, f"This operation is not supported by the exchange simulator: {method} {path}.")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _d8(value: Decimal) -> str:
    return f"{value:.8f}"


def symbol_info(spec: MarketSpec) -> dict[str, Any]:
    """One entry of ``exchangeInfo.symbols``, with Binance's spot filters."""
    max_price = Decimal(10) ** max(3, math.ceil(math.log10(spec.base_price * 1000)))
    max_qty = max(spec.step, Decimal(9) * Decimal(10) ** math.floor(math.log10(1e8 / spec.base_price)))
    max_notional = Decimal(9_000_000) * spec.min_notional / Decimal(5)
    return {
        "symbol": spec.id,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _d8(spec.tick),
                "maxPrice": _d8(max_price),
                "tickSize": _d8(spec.tick),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _d8(spec.step),
                "maxQty": _d8(max_qty),
                "stepSize": _d8(spec.step),
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _d8(Decimal(0)),
                "maxQty": _d8(max_qty),
                "stepSize": _d8(Decimal(0)),
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": _d8(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": _d8(max_notional),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(specs: list[MarketSpec], server_time: int, weight_limit: int) -> dict[str, Any]:
    """``weight_limit``: the request weight per minute the simulator enforces (0: none, and none is listed)."""
    weight = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": weight_limit}]
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": [
            *(weight if weight_limit > 0 else []),
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(s) for s in specs],
    }


def _trade_size(spec: MarketSpec) -> float:
    return spec.daily_quote_volume / (1440 * TRADES_PER_MINUTE)


_KLINE_ROW = '[%d,"%.8f","%.8f","%.8f","%.8f","%.8f",%d,"%.8f",%d,"%.8f","%.8f","0"]'


class KlineRowCache:
    """The JSON text of closed candles, which never changes until the market's overlays do: a bot's
    start asks for 1000 candles per pair, and most of them were formatted for the bot before."""

    def __init__(self, max_rows: int = 200_000) -> None:  # about 40 MB of text at most
        self.max_rows = max_rows
        self.rows = 0
        self._series: dict[tuple[str, str], tuple[int, dict[int, str]]] = {}

    def series(self, market_id: str, interval: str, version: int) -> dict[int, str]:
        """Rows by open time of one market's candles of one interval, at the market's overlay version."""
        if self.rows > self.max_rows:
            self._series.clear()
            self.rows = 0
        cached_version, rows = self._series.get((market_id, interval), (-1, {}))
        if cached_version != version:
            self.rows -= len(rows)
            rows = {}
            self._series[(market_id, interval)] = (version, rows)
        return rows

    def add(self, rows: dict[int, str], open_ms: int, row: str) -> None:
        rows[open_ms] = row
        self.rows += 1


def klines_json(
    spec: MarketSpec,
    interval: str,
    candles: Candles,
    now_ms: int,
    cache: KlineRowCache | None = None,
    version: int = 0,
) -> bytes:
    """The JSON body of ``klines``: arrays of open time, O, H, L, C, volume, close time, quote
    volume, trades, taker buy base volume, taker buy quote volume, ignore (one ``%`` per row;
    closed candles' rows are kept in ``cache``)."""
    if not len(candles):
        return b"[]"
    d, q = spec.price_decimals, spec.qty_decimals
    o, h, low, c = (np.round(x, d) for x in (candles.o, candles.h, candles.low, candles.c))
    volume = np.round(candles.v, q)
    typical = (o + h + low + c) / 4
    quote_volume = np.round(volume * typical, 8)
    trades = np.ceil(quote_volume / _trade_size(spec)).astype(np.int64)
    # Buyers take more of the volume when the candle rises.
    sigma = spec.daily_volatility / math.sqrt(1440)
    taker_base = np.round(volume * (0.5 + 0.25 * np.tanh((c - o) / o / sigma)), q)
    taker_quote = np.round(taker_base * typical, 8)
    opens = candles.open_ms.tolist()
    if interval in tf.FIXED_INTERVALS:
        closes = (candles.open_ms + (tf.FIXED_INTERVALS[interval] - 1)).tolist()
    else:
        closes = [tf.next_open(interval, t) - 1 for t in opens]
    series = cache.series(spec.id, interval, version) if cache is not None else {}
    columns = [
        o.tolist(),
        h.tolist(),
        low.tolist(),
        c.tolist(),
        volume.tolist(),
        closes,
        quote_volume.tolist(),
        trades.tolist(),
        taker_base.tolist(),
        taker_quote.tolist(),
    ]
    rows: list[str] = []
    for i, open_ms in enumerate(opens):
        row = series.get(open_ms)
        if row is None:
            row = _KLINE_ROW % (open_ms, *(column[i] for column in columns))
            if cache is not None and closes[i] < now_ms:  # closed: final
                cache.add(series, open_ms, row)
        rows.append(row)
    return ("[" + ",".join(rows) + "]").encode()


def _last_qty(spec: MarketSpec, seed: int, now_ms: int) -> float:
    u = uniform(stream_key(seed, spec.symbol, "last-qty"), now_ms // 1000)
    lots = max(1, int(_trade_size(spec) * (0.2 + 1.6 * u) / spec.base_price / spec.step_f))
    return round(lots * spec.step_f, spec.qty_decimals)


def ticker_24h(
    spec: MarketSpec, seed: int, t: Ticker24h, book: OrderBook, now_ms: int, *, full: bool = True
) -> dict[str, Any]:
    """``ticker/24hr`` for one market (``type=FULL``, or ``MINI``)."""
    last = round_price(spec, t.last)
    open_ = round_price(spec, t.open)
    count = max(1, math.ceil(t.quote_volume / _trade_size(spec)))
    last_id = (now_ms // 1000) * TRADES_PER_MINUTE
    body: dict[str, Any] = {"symbol": spec.id}
    if full:
        change = round(last - open_, spec.price_decimals)
        weighted = round_price(spec, t.quote_volume / t.volume) if t.volume > 0 else last
        body |= {
            "priceChange": f"{change:.8f}",
            "priceChangePercent": f"{change / open_ * 100:.3f}",
            "weightedAvgPrice": f"{weighted:.8f}",
            "prevClosePrice": f"{open_:.8f}",
            "lastPrice": f"{last:.8f}",
            "lastQty": f"{_last_qty(spec, seed, now_ms):.8f}",
            "bidPrice": f"{book.bids[0][0]:.8f}" if book.bids else "0.00000000",
            "bidQty": f"{book.bids[0][1]:.8f}" if book.bids else "0.00000000",
            "askPrice": f"{book.asks[0][0]:.8f}",
            "askQty": f"{book.asks[0][1]:.8f}",
        }
    else:
        body["lastPrice"] = f"{last:.8f}"
    body |= {
        "openPrice": f"{open_:.8f}",
        "highPrice": f"{max(round_price(spec, t.high), last):.8f}",
        "lowPrice": f"{min(round_price(spec, t.low), last):.8f}",
        "volume": f"{round(t.volume, spec.qty_decimals):.8f}",
        "quoteVolume": f"{t.quote_volume:.8f}",
        "openTime": t.open_ms,
        "closeTime": t.close_ms,
        "firstId": last_id - count + 1,
        "lastId": last_id,
        "count": count,
    }
    return body


def book_ticker(spec: MarketSpec, book: OrderBook) -> dict[str, Any]:
    bid_price, bid_qty = book.bids[0] if book.bids else (0.0, 0.0)
    ask_price, ask_qty = book.asks[0]
    return {
        "symbol": spec.id,
        "bidPrice": f"{bid_price:.8f}",
        "bidQty": f"{bid_qty:.8f}",
        "askPrice": f"{ask_price:.8f}",
        "askQty": f"{ask_qty:.8f}",
    }


def depth(book: OrderBook) -> dict[str, Any]:
    return {
        "lastUpdateId": book.last_update_id,
        "bids": [[f"{p:.8f}", f"{q:.8f}"] for p, q in book.bids],
        "asks": [[f"{p:.8f}", f"{q:.8f}"] for p, q in book.asks],
    }
