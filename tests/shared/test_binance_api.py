"""Binance's request weights and how long each answer stays true (what the relay may serve again)."""

from __future__ import annotations

import math

from shared import binance_api as api

MINUTE = 60_000
NOW = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE + 59_600  # 59.6 s into a minute


def test_weights_follow_binance() -> None:
    assert api.weight("klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "1000"}) == 2
    assert [api.weight("depth", {"limit": str(n)}) for n in (5, 100, 500, 1000, 5000)] == [5, 5, 25, 50, 250]
    assert api.weight("exchangeInfo", {}) == 20
    assert api.weight("ticker/24hr", {"symbol": "BTCUSDT"}) == 2
    assert api.weight("ticker/24hr", {}) == 80
    assert api.weight("ticker/bookTicker", {}) == 4
    assert api.weight("time", {}) == 1


def test_closed_candles_are_kept_for_good_and_the_open_one_until_it_closes() -> None:
    one_minute = {"symbol": "BTCUSDT", "interval": "1m"}
    # Up to now: it holds the open candle, which closes in 0.4 s: kept that long, not the whole second.
    assert api.lifetime("klines", {**one_minute, "limit": "1000"}, NOW) == 0.4
    assert api.lifetime("klines", {**one_minute, "limit": "1000"}, NOW - 30_000) == api.LIVE_TTL
    # Ending before the open candle: those candles never change.
    assert api.lifetime("klines", {**one_minute, "endTime": str(NOW - 2 * MINUTE)}, NOW) == math.inf
    start = NOW - 100 * MINUTE
    assert api.lifetime("klines", {**one_minute, "startTime": str(start), "limit": "50"}, NOW) == math.inf
    assert api.lifetime("klines", {**one_minute, "startTime": str(start), "limit": "1000"}, NOW) == 0.4
    # An interval Binance does not have: its error is not kept.
    assert api.lifetime("klines", {"symbol": "BTCUSDT", "interval": "7m"}, NOW) is None


def test_other_answers_live_as_long_as_their_data() -> None:
    assert api.lifetime("exchangeInfo", {}, NOW) == api.EXCHANGE_INFO_TTL
    for name in ("depth", "ticker/24hr", "ticker/bookTicker", "ticker/price"):
        assert api.lifetime(name, {"symbol": "BTCUSDT"}, NOW) == api.LIVE_TTL
    assert api.lifetime("time", {}, NOW) is None  # the server time is never served again
    assert api.lifetime("account", {}, NOW) is None
