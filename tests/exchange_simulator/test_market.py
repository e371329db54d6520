"""The price model: deterministic, continuous, consistent across timeframes, overlays from now on."""

from __future__ import annotations

import numpy as np
import pytest

from exchange_simulator.market import LISTING_MS, Market
from shared import timeframes as tf
from shared.timeframes import DAY_MS, MINUTE_MS

PAIRS = ["BTC/USDT", "ETH/USDT", "DOGE/USDT"]
# A fixed "now" (2026-03-15 13:37:42.000 UTC) so every figure below is reproducible.
NOW_MS = 1_773_581_862_000


class Clock:
    def __init__(self, t_ms: int) -> None:
        self.t_ms = t_ms

    def __call__(self) -> float:
        return self.t_ms / 1000


def market(seed: int = 7, now_ms: int = NOW_MS) -> Market:
    return Market(PAIRS, seed, Clock(now_ms))


def test_same_seed_same_prices_other_seed_other_prices() -> None:
    a, b, c = market(7), market(7), market(8)
    for mid in ("BTCUSDT", "DOGEUSDT"):
        ka = a.klines(mid, "5m", NOW_MS - 4 * DAY_MS, None, 1000, NOW_MS)
        kb = b.klines(mid, "5m", NOW_MS - 4 * DAY_MS, None, 1000, NOW_MS)
        kc = c.klines(mid, "5m", NOW_MS - 4 * DAY_MS, None, 1000, NOW_MS)
        assert len(ka) == 1000
        for x, y in ((ka.o, kb.o), (ka.h, kb.h), (ka.low, kb.low), (ka.c, kb.c), (ka.v, kb.v)):
            assert np.array_equal(x, y)
        assert not np.allclose(ka.c, kc.c)
    # Markets do not move together: each pair has its own stream.
    btc = a.klines("BTCUSDT", "1h", None, None, 500, NOW_MS)
    eth = a.klines("ETHUSDT", "1h", None, None, 500, NOW_MS)
    btc_returns, eth_returns = np.diff(np.log(btc.c)), np.diff(np.log(eth.c))
    assert abs(np.corrcoef(btc_returns, eth_returns)[0, 1]) < 0.3


def test_prices_are_realistic_and_stay_near_their_level() -> None:
    m = market()
    days = m.klines("BTCUSDT", "1d", LISTING_MS, None, 1000, NOW_MS)
    assert days.open_ms[0] == LISTING_MS
    assert days.low.min() > 65_000 / 3
    assert days.h.max() < 65_000 * 3
    daily_returns = np.diff(np.log(days.c))
    assert 0.01 < daily_returns.std() < 0.06  # BTC-like daily volatility
    minutes = m.klines("BTCUSDT", "1m", None, None, 1000, NOW_MS)
    assert np.all(minutes.low <= np.minimum(minutes.o, minutes.c))
    assert np.all(minutes.h >= np.maximum(minutes.o, minutes.c))
    assert np.all(minutes.v[:-1] > 0)
    assert 0.0002 < np.diff(np.log(minutes.c)).std() < 0.002


@pytest.mark.parametrize("interval", tf.INTERVALS)
def test_every_timeframe_goes_back_at_least_60_days(interval: str) -> None:
    m = market()
    start = NOW_MS - 60 * DAY_MS
    candles = m.klines("ETHUSDT", interval, start, None, 1000, NOW_MS)
    assert len(candles) >= 1
    assert candles.open_ms[0] == tf.ceil(interval, start)
    assert candles.open_ms[0] - start < tf.next_open(interval, candles.open_ms[0]) - candles.open_ms[0]
    # Candles are contiguous and the last is the one in progress (unless `limit` cut the range).
    assert all(tf.next_open(interval, int(a)) == b for a, b in zip(candles.open_ms, candles.open_ms[1:], strict=False))
    if len(candles) < 1000:
        assert candles.open_ms[-1] == tf.floor(interval, NOW_MS)


@pytest.mark.parametrize(("fine", "coarse"), [("1m", "5m"), ("5m", "1h"), ("1h", "1d"), ("1d", "1w"), ("1d", "1M")])
def test_higher_timeframes_aggregate_lower_ones(fine: str, coarse: str) -> None:
    m = market()
    big = m.klines("BTCUSDT", coarse, None, None, 6, NOW_MS)
    small = m.klines("BTCUSDT", fine, int(big.open_ms[0]), None, 1000, NOW_MS)
    for i, open_ms in enumerate(big.open_ms.tolist()):
        inside = (small.open_ms >= open_ms) & (small.open_ms < tf.next_open(coarse, open_ms))
        assert inside.any()
        assert big.o[i] == small.o[inside][0]
        assert big.c[i] == small.c[inside][-1]
        assert big.h[i] == small.h[inside].max()
        assert big.low[i] == small.low[inside].min()
        assert big.v[i] == pytest.approx(small.v[inside].sum(), rel=1e-9)


def test_the_open_candle_moves_with_the_clock_and_closes_when_its_time_has_passed() -> None:
    minute = NOW_MS - NOW_MS % MINUTE_MS
    clock = Clock(minute + 10_000)
    m = Market(PAIRS, 7, clock)

    def last_1m() -> tuple[int, float, float, float]:
        k = m.klines("BTCUSDT", "1m", None, None, 2, m.now_ms())
        return int(k.open_ms[-1]), float(k.o[-1]), float(k.c[-1]), float(k.v[-1])

    open_at_10s = last_1m()
    assert open_at_10s[0] == minute
    assert m.last_price("BTCUSDT", m.now_ms()) == open_at_10s[2]  # the open candle's close is the live price
    clock.t_ms = minute + 50_000
    open_at_50s = last_1m()
    assert open_at_50s[1] == open_at_10s[1]  # same open
    assert open_at_50s[2] != open_at_10s[2]  # the close moves
    assert open_at_50s[3] >= open_at_10s[3]  # volume grows
    # Once the minute is over, the candle is final: the same at any later time, and the next
    # candle opens where it closed.
    clock.t_ms = minute + 61_000
    closed = m.klines("BTCUSDT", "1m", minute, None, 2, m.now_ms())
    clock.t_ms = minute + 7 * DAY_MS
    later = m.klines("BTCUSDT", "1m", minute, None, 2, m.now_ms())
    assert closed.open_ms.tolist() == [minute, minute + MINUTE_MS]
    assert (later.o[0], later.h[0], later.low[0], later.c[0], later.v[0]) == (
        closed.o[0],
        closed.h[0],
        closed.low[0],
        closed.c[0],
        closed.v[0],
    )
    assert later.o[1] == closed.c[0]


def test_the_live_price_is_continuous_and_changes_once_a_second() -> None:
    clock = Clock(NOW_MS)
    m = Market(PAIRS, 7, clock)
    prices = []
    for t in range(NOW_MS, NOW_MS + 120_000, 250):
        clock.t_ms = t
        prices.append(m.last_price("DOGEUSDT", m.now_ms()))
    steps = np.abs(np.diff(np.log(prices)))
    assert steps.max() < 0.002  # no jumps, across minute boundaries included
    assert np.count_nonzero(steps) == 119  # a new price each second, the same within a second


def test_klines_paging_parameters() -> None:
    m = market()
    five = 5 * MINUTE_MS
    start = NOW_MS - 10 * DAY_MS + 1  # not on a candle boundary: the first candle opens after it
    page = m.klines("ETHUSDT", "5m", start, None, 1000, NOW_MS)
    assert len(page) == 1000
    assert page.open_ms[0] == tf.ceil("5m", start)
    nxt = m.klines("ETHUSDT", "5m", int(page.open_ms[-1]) + five, None, 1000, NOW_MS)
    assert nxt.open_ms[0] == page.open_ms[-1] + five
    end = int(page.open_ms[10])
    bounded = m.klines("ETHUSDT", "5m", start, end, 1000, NOW_MS)
    assert bounded.open_ms[-1] == end
    assert len(bounded) == 11
    latest = m.klines("ETHUSDT", "5m", None, end, 3, NOW_MS)
    assert latest.open_ms.tolist() == page.open_ms[8:11].tolist()
    assert len(m.klines("ETHUSDT", "5m", NOW_MS + DAY_MS, None, 10, NOW_MS)) == 0  # the future
    assert len(m.klines("ETHUSDT", "5m", None, LISTING_MS - 1, 10, NOW_MS)) == 0  # before the listing
    first = m.klines("ETHUSDT", "1m", 0, None, 2, NOW_MS)
    assert first.open_ms.tolist() == [LISTING_MS, LISTING_MS + MINUTE_MS]


def test_a_shock_moves_the_price_from_now_on_and_leaves_history_alone() -> None:
    clock = Clock(NOW_MS)
    shocked, seeded = Market(PAIRS, 7, clock), Market(PAIRS, 7, clock)
    history = shocked.klines("BTCUSDT", "1m", None, None, 100, NOW_MS)
    before, after = shocked.shock("BTCUSDT", -10, NOW_MS)
    assert after == pytest.approx(before * 0.9, rel=1e-12)
    again = shocked.klines("BTCUSDT", "1m", None, None, 100, NOW_MS)
    assert np.array_equal(history.c[:-1], again.c[:-1])
    assert np.array_equal(history.low[:-1], again.low[:-1])
    assert again.c[-1] == pytest.approx(after)
    assert again.low[-1] <= after
    assert again.o[-1] == history.o[-1]
    # Later, the market moves on from the shocked level: exactly 0.9 x the seeded price.
    for t in (NOW_MS + 1000, NOW_MS + 3 * 3_600_000, NOW_MS + 40 * DAY_MS):
        assert shocked.last_price("BTCUSDT", t) == pytest.approx(0.9 * seeded.last_price("BTCUSDT", t), rel=1e-12)
    later = NOW_MS + 2 * 3_600_000
    hourly = shocked.klines("BTCUSDT", "1h", None, None, 5, later)
    hourly_seeded = seeded.klines("BTCUSDT", "1h", None, None, 5, later)
    assert hourly.c[-1] == pytest.approx(0.9 * hourly_seeded.c[-1])
    straddling = hourly.open_ms == tf.floor("1h", NOW_MS)
    assert hourly.o[straddling] == hourly_seeded.o[straddling]  # opened before the shock
    assert hourly.low[straddling] <= 0.9 * hourly_seeded.c[straddling]
    assert shocked.last_price("ETHUSDT", later) == seeded.last_price("ETHUSDT", later)  # other pairs untouched
    shocked.reset("BTCUSDT")
    assert shocked.last_price("BTCUSDT", later) == seeded.last_price("BTCUSDT", later)


def test_a_scripted_path_is_followed_then_the_market_moves_on() -> None:
    clock = Clock(NOW_MS)
    m, seeded = Market(PAIRS, 7, clock), Market(PAIRS, 7, clock)
    start = m.last_price("ETHUSDT", NOW_MS)
    points = [(NOW_MS + 30_000, start * 1.05), (NOW_MS + 90_000, start * 0.95)]
    assert m.path("ETHUSDT", points, NOW_MS) == pytest.approx(start)
    assert m.last_price("ETHUSDT", NOW_MS + 30_000) == pytest.approx(start * 1.05)
    assert m.last_price("ETHUSDT", NOW_MS + 15_000) == pytest.approx(start * 1.025)  # a straight line
    assert m.last_price("ETHUSDT", NOW_MS + 90_000) == pytest.approx(start * 0.95)
    # After the last point: the seeded moves, scaled to continue from the last point.
    ratio = m.last_price("ETHUSDT", NOW_MS + 90_000) / seeded.last_price("ETHUSDT", NOW_MS + 90_000)
    for t in (NOW_MS + 91_000, NOW_MS + DAY_MS):
        assert m.last_price("ETHUSDT", t) == pytest.approx(ratio * seeded.last_price("ETHUSDT", t), rel=1e-12)
    # Candles during the path follow it: highs and lows include the way-points.
    later = NOW_MS + 10 * MINUTE_MS
    minutes = m.klines("ETHUSDT", "1m", NOW_MS - MINUTE_MS, None, 10, later)
    assert minutes.h.max() >= start * 1.05 * 0.9999
    assert minutes.low.min() <= start * 0.95 * 1.0001
    # A shock during a path scales the rest of it.
    m.shock("ETHUSDT", 10, NOW_MS + 60_000)
    assert m.last_price("ETHUSDT", NOW_MS + 90_000) == pytest.approx(start * 0.95 * 1.1)
