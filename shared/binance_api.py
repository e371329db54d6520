"""Binance's spot REST API as the relay and the simulator both need it: what a request weighs, and how long its
answer stays true.

Weights are Binance's ("LIMITS" in the spot API docs and each endpoint's "Weight"): an IP's weights are summed per
calendar minute against ``REQUEST_WEIGHT`` (6,000), and every answer says the minute's sum in
``X-MBX-USED-WEIGHT-1M``. ``name`` is the path after ``/api/v3/`` (``klines``, ``ticker/24hr``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from shared import timeframes as tf

PREFIX = "/api/v3"
REQUEST_WEIGHT = 6000  # per minute per IP, as exchangeInfo's rateLimits say
USED_WEIGHT_HEADER = "x-mbx-used-weight-1m"
EXCHANGE_INFO_TTL = 300.0  # symbols and filters change rarely; Freqtrade reloads markets hourly
LIVE_TTL = 1.0  # tickers, books and the open candle: one second, Binance's own update pace for most of them
FOREVER = float("inf")


def _depth_weight(limit: int) -> int:
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _symbols_count(params: Mapping[str, str]) -> int | None:
    """How many symbols a ``symbols=["A","B"]`` parameter names; None without one."""
    raw = params.get("symbols")
    if raw is None:
        return None
    return max(1, raw.count(",") + 1)


def weight(name: str, params: Mapping[str, str]) -> int:
    """The weight Binance charges for ``/api/v3/<name>`` with ``params`` (1 for anything it does not list)."""
    if name == "exchangeInfo":
        return 20
    if name in ("klines", "uiKlines"):
        return 2
    if name == "depth":
        try:
            return _depth_weight(int(params.get("limit", "100")))
        except ValueError:
            return 5
    if name == "ticker/24hr":
        if "symbol" in params:
            return 2
        count = _symbols_count(params)
        if count is None or count > 100:
            return 80
        return 2 if count <= 20 else 40
    if name in ("ticker/price", "ticker/bookTicker"):
        return 2 if "symbol" in params else 4
    return 1


def limit_in(name: str, body: bytes) -> int | None:
    """The request-weight limit per minute an ``exchangeInfo`` answer states (its ``rateLimits``); None otherwise."""
    if name != "exchangeInfo":
        return None
    try:
        limits = json.loads(body).get("rateLimits", [])
        for item in limits:
            if item.get("rateLimitType") == "REQUEST_WEIGHT" and item.get("interval") == "MINUTE":
                return int(item["limit"]) // max(1, int(item.get("intervalNum", 1)))
    except (ValueError, TypeError, AttributeError, KeyError):
        return None
    return None


def _int(params: Mapping[str, str], key: str) -> int | None:
    try:
        return int(params[key]) if key in params else None
    except ValueError:
        return None


def lifetime(name: str, params: Mapping[str, str], now_ms: int) -> float | None:
    """Seconds the answer to a public ``GET /api/v3/<name>`` stays what Binance would answer now; None when it must
    not be kept at all (the server time, anything not listed).

    Candles that have closed never change: an answer whose last candle closed before now is kept for good. One that
    holds the open candle is kept for :data:`LIVE_TTL`, and never past the candle's close (the answer after it has
    one more closed candle).
    """
    if name == "exchangeInfo":
        return EXCHANGE_INFO_TTL
    if name in ("klines", "uiKlines"):
        interval = params.get("interval", "")
        if interval not in tf.INTERVALS:
            return None  # Binance answers an error: not kept
        open_now = tf.floor(interval, now_ms)
        end, start, limit = _int(params, "endTime"), _int(params, "startTime"), _int(params, "limit") or 500
        last_open = None
        if end is not None:
            last_open = tf.floor(interval, end)
        elif start is not None and interval in tf.FIXED_INTERVALS:
            last_open = tf.ceil(interval, start) + (limit - 1) * tf.FIXED_INTERVALS[interval]
        if last_open is not None and last_open < open_now:
            return FOREVER
        return max(0.0, min(LIVE_TTL, (tf.next_open(interval, open_now) - now_ms) / 1000))
    if name in ("depth", "ticker/24hr", "ticker/price", "ticker/bookTicker", "avgPrice", "trades", "ping"):
        return LIVE_TTL
    return None
