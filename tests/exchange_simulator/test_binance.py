"""Binance's shapes as the simulator writes them, and the cache of closed candles' text."""

from __future__ import annotations

import json

from exchange_simulator.binance import KlineRowCache, klines_json
from exchange_simulator.market import Market
from shared.timeframes import MINUTE_MS

NOW_MS = 1_773_581_862_000
PAIRS = ["BTC/USDT", "DOGE/USDT"]


class Clock:
    def __init__(self, t_ms: int) -> None:
        self.t_ms = t_ms

    def __call__(self) -> float:
        return self.t_ms / 1000


def _body(market: Market, cache: KlineRowCache | None, now_ms: int, limit: int = 10) -> list[list[object]]:
    spec = market.specs["DOGEUSDT"]
    candles = market.klines(spec.id, "1m", None, None, limit, now_ms)
    rows: list[list[object]] = json.loads(klines_json(spec, "1m", candles, now_ms, cache, market.versions[spec.id]))
    return rows


def test_rows_have_binance_types_and_the_markets_precision() -> None:
    market = Market(PAIRS, 7, Clock(NOW_MS))
    rows = _body(market, None, NOW_MS)
    assert len(rows) == 10
    open_ms, o, h, low, c, v, close_ms, quote_volume, trades, taker_base, taker_quote, ignore = rows[0]
    assert isinstance(open_ms, int)
    assert close_ms == open_ms + MINUTE_MS - 1
    assert all(isinstance(x, str) for x in (o, h, low, c, v, quote_volume, taker_base, taker_quote, ignore))
    assert isinstance(trades, int)
    assert o.endswith("000")  # DOGE's tick is 0.00001: five decimals, written with eight
    assert v.endswith(".00000000")  # DOGE's lot is 1
    assert float(taker_base) <= float(v)


def test_cached_rows_are_the_same_text_and_an_overlay_change_drops_them() -> None:
    clock = Clock(NOW_MS)
    market, seeded, cache = Market(PAIRS, 7, clock), Market(PAIRS, 7, clock), KlineRowCache()
    first = _body(market, cache, NOW_MS)
    assert cache.rows == 9  # the open candle is not kept: it is still moving
    assert _body(market, cache, NOW_MS) == first == _body(seeded, None, NOW_MS)
    # A shock now, then two minutes later: the shocked minutes are closed and cached.
    market.shock("DOGEUSDT", -20, NOW_MS)
    later = NOW_MS + 2 * MINUTE_MS
    shocked = _body(market, cache, later)
    assert shocked != _body(seeded, None, later)
    # A reset brings back the seeded prices for that period too: no stale cached row may remain.
    market.reset("DOGEUSDT")
    assert _body(market, cache, later) == _body(seeded, None, later)


def test_cache_stays_bounded() -> None:
    market, cache = Market(PAIRS, 7, Clock(NOW_MS)), KlineRowCache(max_rows=1500)
    _body(market, cache, NOW_MS, limit=1000)
    _body(market, cache, NOW_MS, limit=1000)
    assert cache.rows == 999  # the second time, every closed row came from the cache
    spec = market.specs["BTCUSDT"]
    klines_json(spec, "1m", market.klines(spec.id, "1m", None, None, 1000, NOW_MS), NOW_MS, cache, 0)
    assert cache.rows == 1998  # over the bound: the next use starts afresh
    _body(market, cache, NOW_MS, limit=1000)
    assert cache.rows == 999
