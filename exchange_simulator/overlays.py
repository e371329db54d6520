"""Price overlays: shocks and scripted paths, laid over the seeded market from their start on.

A pair's overlays form a timeline of contiguous segments. A *factor* segment scales the seeded
price; a *line* segment replaces it by a straight line between two (time, price) points. A shock at
``t0`` multiplies everything from ``t0`` on; a scripted path at ``t0`` replaces everything from
``t0`` on by lines through its way-points (starting from the price at ``t0``) and then lets the
seeded market move on from the last way-point's price (a factor segment). Overlays start *now*, so
they never change a candle that has closed, and candles are computed from the timeline on demand.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from exchange_simulator.noise import FloatArray, IntArray

BasePrice = Callable[[int], float]


@dataclass(frozen=True)
class Line:
    t0: int
    p0: float
    t1: int
    p1: float

    def at(self, t: float) -> float:
        return self.p0 + (self.p1 - self.p0) * (t - self.t0) / (self.t1 - self.t0)

    def at_many(self, t: IntArray) -> FloatArray:
        result: FloatArray = self.p0 + (self.p1 - self.p0) * (t - self.t0) / (self.t1 - self.t0)
        return result

    def scaled(self, factor: float) -> Line:
        return replace(self, p0=self.p0 * factor, p1=self.p1 * factor)


@dataclass(frozen=True)
class Segment:
    """From ``start`` until the next segment: ``factor`` x the seeded price, or ``line``."""

    start: int
    factor: float = 1.0
    line: Line | None = None

    def value(self, t: int, base: BasePrice) -> float:
        return self.line.at(t) if self.line is not None else self.factor * base(t)


class Timeline:
    def __init__(self) -> None:
        self.segments: list[Segment] = [Segment(0)]

    @property
    def identity(self) -> bool:
        return len(self.segments) == 1 and self.segments[0].factor == 1.0 and self.segments[0].line is None

    def index_of(self, t: int) -> int:
        return bisect.bisect_right([s.start for s in self.segments], t) - 1

    def price(self, t: int, base: BasePrice) -> float:
        return self.segments[self.index_of(t)].value(t, base)

    def _split(self, t0: int) -> int:
        """Make a segment start at ``t0``; its index."""
        i = self.index_of(t0)
        if self.segments[i].start == t0:
            return i
        self.segments.insert(i + 1, replace(self.segments[i], start=t0))
        return i + 1

    def shock(self, t0: int, factor: float) -> None:
        i = self._split(t0)
        self.segments[i:] = [
            replace(s, factor=s.factor * factor, line=None if s.line is None else s.line.scaled(factor))
            for s in self.segments[i:]
        ]

    def path(self, t0: int, points: list[tuple[int, float]], base: BasePrice) -> float:
        """Lines from the price at ``t0`` through ``points`` (absolute times, increasing); returns that
        start price. After the last point the seeded market moves on from the last point's price."""
        start_price = self.price(t0, base)
        i = self._split(t0)
        del self.segments[i:]
        t_prev, p_prev = t0, start_price
        for t, p in points:
            self.segments.append(Segment(t_prev, line=Line(t_prev, p_prev, t, p)))
            t_prev, p_prev = t, p
        self.segments.append(Segment(t_prev, factor=p_prev / base(t_prev)))
        return start_price

    def transform(
        self,
        starts: IntArray,
        close_at: IntArray,
        last_instant: IntArray,
        o: FloatArray,
        h: FloatArray,
        low: FloatArray,
        c: FloatArray,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, np.ndarray]:
        """Apply the timeline to candles that lie inside one segment; the mask of the others (they
        straddle a segment boundary and must be computed from finer candles)."""
        o, h, low, c = o.copy(), h.copy(), low.copy(), c.copy()
        bounds = np.array([s.start for s in self.segments], dtype=np.int64)
        first = np.searchsorted(bounds, starts, side="right") - 1
        last = np.searchsorted(bounds, last_instant, side="right") - 1
        single = first == last
        for k in np.unique(first[single]):
            seg = self.segments[int(k)]
            sel = single & (first == k)
            if seg.line is None:
                if seg.factor != 1.0:
                    o[sel] *= seg.factor
                    h[sel] *= seg.factor
                    low[sel] *= seg.factor
                    c[sel] *= seg.factor
            else:
                po = seg.line.at_many(starts[sel])
                pc = seg.line.at_many(close_at[sel])
                o[sel], c[sel] = po, pc
                h[sel], low[sel] = np.maximum(po, pc), np.minimum(po, pc)
        return o, h, low, c, ~single

    def refine(
        self, start: int, close_at: int, last_instant: int, base_high: float, base_low: float, base: BasePrice
    ) -> tuple[float, float, float, float]:
        """One (minute) candle that straddles segment boundaries: open, high, low, close from the
        segments' values at their ends inside the candle (and the seeded wicks where scaled)."""
        k0, k1 = self.index_of(start), self.index_of(last_instant)
        values: list[float] = []
        o = c = 0.0
        for k in range(k0, k1 + 1):
            seg = self.segments[k]
            a = max(start, seg.start)
            b = close_at if k == k1 else self.segments[k + 1].start
            va, vb = seg.value(a, base), seg.value(b, base)
            values += [va, vb]
            if seg.line is None:
                values += [base_high * seg.factor, base_low * seg.factor]
            if k == k0:
                o = va
            if k == k1:
                c = vb
        return o, max(values), min(values), c
