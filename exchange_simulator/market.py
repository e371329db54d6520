"""The deterministic price model and the market every endpoint reads.

**Seeded prices.** A pair's price is a pure function of (seed, pair, time), computed without
generating history in sequence:

- one *anchor* per UTC day: a mean-reverting random walk of the log price (an AR(1) on days since
  the listing day, so prices stay near the market's level for years);
- inside a day, on a grid of 1-minute steps, a Brownian bridge from that day's anchor to the next
  day's: the minute increments come from :mod:`exchange_simulator.noise`, so any day is computed
  on its own from (seed, pair, minute index);
- each minute candle: open and close on the grid, wicks and volume from the same noise.

Higher timeframes aggregate the 1-minute candles (open = first, close = last, high/low = max/min,
volume = sum). Within the minute in progress the price moves in a straight line from the minute's
open toward its close, sampled once a second: the open candle's close is the live price, and a
candle's figures are final once its time has passed. Shocks and scripted paths
(:mod:`exchange_simulator.overlays`) are applied on top, from their start on.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from exchange_simulator.markets import MarketSpec, build_markets
from exchange_simulator.noise import FloatArray, IntArray, normals, stream_key
from exchange_simulator.overlays import Timeline
from shared import timeframes as tf
from shared.timeframes import DAY_MS, MINUTE_MS

LISTING_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: every market's first candle
LISTING_DAY = LISTING_MS // DAY_MS
MINUTES_PER_DAY = 1440
PRICE_TICK_MS = 1000  # the live price changes once a second
ANCHOR_PHI = 0.97  # day-to-day persistence of the anchor (half-life about 23 days)
ANCHOR_SHOCK = 0.8  # anchor innovation, in units of the daily volatility
DAY_CACHE_DAYS = 120  # per market: at most about 5.5 MB
CANDLE_CACHE_ROWS = 200_000  # per market: at most about 10 MB

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A least-recently-used cache bounded by the total ``weight`` of its values (single-threaded:
    the simulator runs on one event loop)."""

    def __init__(self, max_weight: int, weight: Callable[[V], int] = lambda _: 1) -> None:
        self.max_weight = max_weight
        self.weight = weight
        self.total = 0
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, make: Callable[[], V]) -> V:
        try:
            value = self._data[key]
        except KeyError:
            value = self._data[key] = make()
            self.total += self.weight(value)
            while self.total > self.max_weight and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self.total -= self.weight(old)
            return value
        self._data.move_to_end(key)
        return value


@dataclass(frozen=True)
class Candles:
    """Candles as parallel arrays, the oldest first; ``open_ms`` are their open times."""

    open_ms: IntArray
    o: FloatArray
    h: FloatArray
    low: FloatArray
    c: FloatArray
    v: FloatArray

    def __len__(self) -> int:
        return len(self.open_ms)

    def slice(self, a: int, b: int) -> Candles:
        return Candles(self.open_ms[a:b], self.o[a:b], self.h[a:b], self.low[a:b], self.c[a:b], self.v[a:b])

    @staticmethod
    def concat(parts: list[Candles]) -> Candles:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return Candles.empty()
        return Candles(
            np.concatenate([p.open_ms for p in parts]),
            np.concatenate([p.o for p in parts]),
            np.concatenate([p.h for p in parts]),
            np.concatenate([p.low for p in parts]),
            np.concatenate([p.c for p in parts]),
            np.concatenate([p.v for p in parts]),
        )

    @staticmethod
    def empty() -> Candles:
        f = np.zeros(0, dtype=np.float64)
        return Candles(np.zeros(0, dtype=np.int64), f, f, f, f, f)

    def grouped(self, starts: IntArray, open_ms: IntArray) -> Candles:
        """Aggregate runs of candles that begin at the indexes ``starts`` into one candle each."""
        ends = np.append(starts[1:], len(self)) - 1
        return Candles(
            open_ms,
            self.o[starts],
            np.maximum.reduceat(self.h, starts),
            np.minimum.reduceat(self.low, starts),
            self.c[ends],
            np.add.reduceat(self.v, starts),
        )


@dataclass(frozen=True)
class _Day:
    """One day of the seeded 1-minute grid."""

    price: FloatArray  # 1441 prices: at the start of each minute, and at the end of the day
    wick_up: FloatArray  # relative wick above max(open, close), per minute
    wick_down: FloatArray
    volume: FloatArray  # base volume per minute, whole lots


class PairModel:
    """The seeded (overlay-free) prices of one market."""

    def __init__(self, spec: MarketSpec, seed: int) -> None:
        self.spec = spec
        self._key_day = stream_key(seed, spec.symbol, "day-anchor")
        self._key_minute = stream_key(seed, spec.symbol, "minute")
        self._key_wick_up = stream_key(seed, spec.symbol, "wick-up")
        self._key_wick_down = stream_key(seed, spec.symbol, "wick-down")
        self._key_volume = stream_key(seed, spec.symbol, "volume")
        self._sigma = spec.daily_volatility / math.sqrt(MINUTES_PER_DAY)  # per-minute log volatility
        self._anchors: list[float] = [0.0]  # log level at the start of day LISTING_DAY + i
        self._days: LRU[int, _Day] = LRU(DAY_CACHE_DAYS)  # about 46 KB a day
        self._day_candles: LRU[tuple[int, int], Candles] = LRU(CANDLE_CACHE_ROWS, len)  # 48 bytes a row

    def _anchor(self, day: int) -> float:
        i = day - LISTING_DAY
        while len(self._anchors) <= i:
            n = len(self._anchors)
            shocks = normals(self._key_day, np.arange(n, n + 256, dtype=np.int64))
            shocks *= ANCHOR_SHOCK * self.spec.daily_volatility
            level = self._anchors[-1]
            for shock in shocks.tolist():
                level = ANCHOR_PHI * level + shock
                self._anchors.append(level)
        return self._anchors[max(0, i)]

    def _make_day(self, day: int) -> _Day:
        minutes = np.arange(day * MINUTES_PER_DAY, (day + 1) * MINUTES_PER_DAY, dtype=np.int64)
        steps = normals(self._key_minute, minutes) * self._sigma
        walk = np.concatenate(([0.0], np.cumsum(steps)))
        frac = np.arange(MINUTES_PER_DAY + 1, dtype=np.float64) / MINUTES_PER_DAY
        a0, a1 = self._anchor(day), self._anchor(day + 1)
        log_price = a0 + (a1 - a0) * frac + walk - frac * walk[-1]
        price = self.spec.base_price * np.exp(log_price)
        wick_up = np.abs(normals(self._key_wick_up, minutes)) * (0.6 * self._sigma)
        wick_down = np.abs(normals(self._key_wick_down, minutes)) * (0.6 * self._sigma)
        # Volume: busier when the price moves, log-normal noise around the market's daily volume.
        move = np.abs(np.diff(log_price)) / self._sigma
        quote = (
            self.spec.daily_quote_volume
            / MINUTES_PER_DAY
            * np.exp(0.5 * normals(self._key_volume, minutes) - 0.125)
            * (0.6 + 0.5 * move)
        )
        step = self.spec.step_f
        volume = np.floor(quote / ((price[:-1] + price[1:]) / 2) / step) * step
        return _Day(price, wick_up, wick_down, volume)

    def day(self, day: int) -> _Day:
        return self._days.get(day, lambda: self._make_day(day))

    def price_at(self, t_ms: int) -> float:
        """The seeded price at any instant (straight line inside a minute)."""
        minute, offset = divmod(t_ms, MINUTE_MS)
        day, k = divmod(minute, MINUTES_PER_DAY)
        grid = self.day(day).price
        p0, p1 = float(grid[k]), float(grid[k + 1])
        return p0 + (p1 - p0) * offset / MINUTE_MS

    def minutes(self, first: int, stop: int, now_ms: int) -> Candles:
        """Seeded 1-minute candles for minute indexes ``first`` .. ``stop - 1``; the minute in
        progress at ``now_ms`` (if included) is partial: its close is the live price."""
        parts: list[Candles] = []
        for day in range(first // MINUTES_PER_DAY, (stop - 1) // MINUTES_PER_DAY + 1):
            a = max(first, day * MINUTES_PER_DAY) - day * MINUTES_PER_DAY
            b = min(stop, (day + 1) * MINUTES_PER_DAY) - day * MINUTES_PER_DAY
            d = self.day(day)
            o, c = d.price[a:b], d.price[a + 1 : b + 1]
            parts.append(
                Candles(
                    (day * MINUTES_PER_DAY + np.arange(a, b, dtype=np.int64)) * MINUTE_MS,
                    o,
                    np.maximum(o, c) * (1.0 + d.wick_up[a:b]),
                    np.minimum(o, c) * (1.0 - d.wick_down[a:b]),
                    c,
                    d.volume[a:b],
                )
            )
        candles = Candles.concat(parts)
        now_minute = now_ms // MINUTE_MS
        if first <= now_minute < stop:
            i = now_minute - first
            frac = (now_ms - now_minute * MINUTE_MS) / MINUTE_MS
            day, k = divmod(now_minute, MINUTES_PER_DAY)
            d = self.day(day)
            o_i = float(d.price[k])
            c_i = o_i + (float(d.price[k + 1]) - o_i) * frac
            step = self.spec.step_f
            candles = Candles(
                candles.open_ms,
                candles.o,
                candles.h.copy(),
                candles.low.copy(),
                candles.c.copy(),
                candles.v.copy(),
            )
            candles.c[i] = c_i
            candles.h[i] = max(o_i, c_i) * (1.0 + float(d.wick_up[k]) * frac)
            candles.low[i] = min(o_i, c_i) * (1.0 - float(d.wick_down[k]) * frac)
            candles.v[i] = math.floor(float(d.volume[k]) * frac / step) * step
        return candles

    def day_candles(self, day: int, minutes_per_candle: int) -> Candles:
        """A whole (past) day as seeded candles of ``minutes_per_candle`` minutes (a divisor of 1440)."""

        if minutes_per_candle == 1:  # cheap from the cached day: not cached twice
            return self.minutes(day * MINUTES_PER_DAY, (day + 1) * MINUTES_PER_DAY, -1)

        def make() -> Candles:
            m = self.minutes(day * MINUTES_PER_DAY, (day + 1) * MINUTES_PER_DAY, -1)
            starts = np.arange(0, MINUTES_PER_DAY, minutes_per_candle, dtype=np.int64)
            return m.grouped(starts, m.open_ms[starts])

        return self._day_candles.get((day, minutes_per_candle), make)


@dataclass(frozen=True)
class Ticker24h:
    open_ms: int
    close_ms: int
    open: float
    high: float
    low: float
    last: float
    volume: float
    quote_volume: float


@dataclass
class OverlayRecord:
    """What the control API did to a pair, for ``GET /_sim/state``."""

    kind: str  # "shock" | "path"
    at_ms: int
    detail: dict[str, object]


class Market:
    """Every market of the simulator: seeded prices, overlays, and the figures endpoints serve."""

    def __init__(self, pairs: list[str], seed: int, clock: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.clock = clock
        self.specs: dict[str, MarketSpec] = build_markets(pairs, seed)
        self.by_symbol: dict[str, MarketSpec] = {s.symbol: s for s in self.specs.values()}
        self.models = {mid: PairModel(spec, seed) for mid, spec in self.specs.items()}
        self.timelines = {mid: Timeline() for mid in self.specs}
        self.overlays: dict[str, list[OverlayRecord]] = {mid: [] for mid in self.specs}
        # Bumped whenever a market's overlays change: part of the keys of the caches below.
        self.versions: dict[str, int] = dict.fromkeys(self.specs, 0)
        self._last_prices: LRU[tuple[str, int, int], float] = LRU(256)
        self._closed_days: LRU[tuple[str, int, int], tuple[float, float, float, float, float]] = LRU(256)

    def now_ms(self) -> int:
        """The market's clock: wall-clock milliseconds, floored to the live price's 1-second tick."""
        t = int(self.clock() * 1000)
        return t - t % PRICE_TICK_MS

    def resolve(self, name: str) -> MarketSpec | None:
        """A market by Binance id (``BTCUSDT``) or unified symbol (``BTC/USDT``), any case."""
        key = name.strip().upper()
        return self.specs.get(key) or self.by_symbol.get(key)

    # -- candles ---------------------------------------------------------------------------

    def _seeded(self, mid: str, minutes_per_candle: int, a_ms: int, b_ms: int, now_ms: int) -> Candles:
        """Seeded candles of ``minutes_per_candle`` (a divisor of a day) opening in [a_ms, b_ms)."""
        model = self.models[mid]
        length = minutes_per_candle * MINUTE_MS
        today = now_ms // DAY_MS
        parts: list[Candles] = []
        for day in range(a_ms // DAY_MS, (b_ms - 1) // DAY_MS + 1):
            lo = max(a_ms, day * DAY_MS)
            hi = min(b_ms, (day + 1) * DAY_MS)
            if day < today:
                whole = model.day_candles(day, minutes_per_candle)
                parts.append(whole.slice((lo - day * DAY_MS) // length, -(-(hi - day * DAY_MS) // length)))
            else:
                stop = min(hi, now_ms + 1)
                if stop <= lo:
                    continue
                m = model.minutes(lo // MINUTE_MS, -(-stop // MINUTE_MS), now_ms)
                if minutes_per_candle == 1:
                    parts.append(m)
                else:
                    starts = np.arange(0, len(m), minutes_per_candle, dtype=np.int64)
                    parts.append(m.grouped(starts, m.open_ms[starts]))
        return Candles.concat(parts)

    def _overlaid(self, mid: str, candles: Candles, minutes_per_candle: int, now_ms: int) -> Candles:
        timeline = self.timelines[mid]
        if timeline.identity or not len(candles):
            return candles
        model = self.models[mid]
        length = minutes_per_candle * MINUTE_MS
        ends = candles.open_ms + length
        partial = ends > now_ms
        close_at = np.where(partial, now_ms, ends)
        last_instant = np.where(partial, now_ms, ends - 1)
        o, h, low, c, straddling = timeline.transform(
            candles.open_ms, close_at, last_instant, candles.o, candles.h, candles.low, candles.c
        )
        for i in np.flatnonzero(straddling).tolist():
            start = int(candles.open_ms[i])
            if minutes_per_candle == 1:
                o[i], h[i], low[i], c[i] = timeline.refine(
                    start,
                    int(close_at[i]),
                    int(last_instant[i]),
                    float(candles.h[i]),
                    float(candles.low[i]),
                    model.price_at,
                )
            else:
                stop = min(int(ends[i]), now_ms + 1)
                fine = self._overlaid(mid, model.minutes(start // MINUTE_MS, -(-stop // MINUTE_MS), now_ms), 1, now_ms)
                o[i], h[i], low[i], c[i] = fine.o[0], fine.h.max(), fine.low.min(), fine.c[-1]
        return Candles(candles.open_ms, o, h, low, c, candles.v)

    def candles(self, mid: str, minutes_per_candle: int, a_ms: int, b_ms: int, now_ms: int) -> Candles:
        """Candles of ``minutes_per_candle`` (a divisor of a day) opening in [a_ms, b_ms), overlays applied."""
        a_ms = max(a_ms, LISTING_MS)
        if b_ms <= a_ms:
            return Candles.empty()
        return self._overlaid(
            mid, self._seeded(mid, minutes_per_candle, a_ms, b_ms, now_ms), minutes_per_candle, now_ms
        )

    def klines(
        self, mid: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int, now_ms: int
    ) -> Candles:
        """What Binance's ``klines`` returns for these parameters (see :func:`timeframes.candle_opens`)."""
        opens = tf.candle_opens(
            interval, first_allowed=LISTING_MS, now_ms=now_ms, start_ms=start_ms, end_ms=end_ms, limit=limit
        )
        if not opens:
            return Candles.empty()
        stop = tf.next_open(interval, opens[-1])
        if tf.is_intraday(interval):
            return self.candles(mid, tf.FIXED_INTERVALS[interval] // MINUTE_MS, opens[0], stop, now_ms)
        days = self.candles(mid, MINUTES_PER_DAY, opens[0], stop, now_ms)
        if interval == "1d":
            return days
        open_array = np.array(opens, dtype=np.int64)
        group = np.searchsorted(open_array, days.open_ms, side="right") - 1
        starts = np.flatnonzero(np.diff(group, prepend=-1))
        return days.grouped(starts, open_array[group[starts]])

    # -- prices ----------------------------------------------------------------------------

    def _current_minute(self, mid: str, now_ms: int) -> Candles:
        minute = now_ms - now_ms % MINUTE_MS
        return self.candles(mid, 1, minute, minute + MINUTE_MS, now_ms)

    def last_price(self, mid: str, now_ms: int) -> float:
        """The live price: the close of the minute in progress."""
        return self._last_prices.get(
            (mid, now_ms, self.versions[mid]), lambda: float(self._current_minute(mid, now_ms).c[-1])
        )

    def ticker_24h(self, mid: str, now_ms: int) -> Ticker24h:
        """The rolling 24-hour window: the 1440 minutes before the one in progress, and that one."""
        minute = now_ms - now_ms % MINUTE_MS

        def closed_day() -> tuple[float, float, float, float, float]:
            m = self.candles(mid, 1, minute - DAY_MS, minute, now_ms)
            quote = float((m.v * (m.o + m.h + m.low + m.c) / 4).sum())
            return float(m.o[0]), float(m.h.max()), float(m.low.min()), float(m.v.sum()), quote

        open_, high, low, volume, quote = self._closed_days.get((mid, minute, self.versions[mid]), closed_day)
        now = self._current_minute(mid, now_ms)
        return Ticker24h(
            open_ms=now_ms - DAY_MS,
            close_ms=now_ms,
            open=open_,
            high=max(high, float(now.h[0])),
            low=min(low, float(now.low[0])),
            last=float(now.c[0]),
            volume=volume + float(now.v[0]),
            quote_volume=quote + float(now.v[0] * (now.o[0] + now.h[0] + now.low[0] + now.c[0]) / 4),
        )

    # -- overlays --------------------------------------------------------------------------

    def shock(self, mid: str, percent: float, now_ms: int) -> tuple[float, float]:
        """The price jumps (or falls) by ``percent`` now; the price before and after."""
        before = self.last_price(mid, now_ms)
        self.timelines[mid].shock(now_ms, 1.0 + percent / 100.0)
        self.versions[mid] += 1
        after = self.last_price(mid, now_ms)
        self.overlays[mid].append(OverlayRecord("shock", now_ms, {"percent": percent}))
        return before, after

    def path(self, mid: str, points: list[tuple[int, float]], now_ms: int) -> float:
        """From now, the price follows straight lines through ``points`` (times after now, prices);
        returns the price it starts from."""
        start = self.timelines[mid].path(now_ms, points, self.models[mid].price_at)
        self.versions[mid] += 1
        self.overlays[mid].append(
            OverlayRecord("path", now_ms, {"points": [{"at_ms": t, "price": p} for t, p in points]})
        )
        return start

    def reset(self, mid: str | None = None) -> None:
        """Drop the overlays (of one market or all): prices are the seeded ones again, history included."""
        for key in [mid] if mid is not None else list(self.specs):
            self.timelines[key] = Timeline()
            self.overlays[key] = []
            self.versions[key] += 1
