"""Binance's kline intervals and where their candles open (UTC).

Fixed-length intervals open on multiples of their length since the Unix epoch, except weeks,
which open on Mondays; months open on the first day of a calendar month.
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
_MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday

FIXED_INTERVALS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}
MONTH = "1M"
INTERVALS: tuple[str, ...] = (*FIXED_INTERVALS, MONTH)


def is_intraday(interval: str) -> bool:
    return interval in FIXED_INTERVALS and FIXED_INTERVALS[interval] < DAY_MS


def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def floor(interval: str, t_ms: int) -> int:
    """Open time of the candle that contains ``t_ms``."""
    if interval == MONTH:
        d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
        return _month_start(d.year, d.month)
    length = FIXED_INTERVALS[interval]
    offset = _MONDAY_OFFSET_MS if interval == "1w" else 0
    return t_ms - (t_ms - offset) % length


def next_open(interval: str, open_ms: int) -> int:
    """Open time of the candle after the one that opens at ``open_ms``."""
    if interval == MONTH:
        d = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        return _month_start(d.year + d.month // 12, d.month % 12 + 1)
    return open_ms + FIXED_INTERVALS[interval]


def ceil(interval: str, t_ms: int) -> int:
    """Open time of the first candle that opens at or after ``t_ms``."""
    start = floor(interval, t_ms)
    return start if start == t_ms else next_open(interval, start)


def previous_open(interval: str, open_ms: int) -> int:
    if interval == MONTH:
        return floor(MONTH, open_ms - 1)
    return open_ms - FIXED_INTERVALS[interval]


def candle_opens(
    interval: str,
    *,
    first_allowed: int,
    now_ms: int,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[int]:
    """Open times Binance's ``klines`` returns: ``openTime >= startTime`` and ``<= endTime``, at most
    ``limit``, the oldest first; without ``startTime`` the latest ``limit`` up to ``endTime`` (or now).
    No candle opens before the market's first candle nor after the one in progress."""
    lowest = floor(interval, first_allowed)
    highest = floor(interval, now_ms)
    if end_ms is not None:
        highest = min(highest, floor(interval, end_ms))
    if highest < lowest:
        return []
    if interval in FIXED_INTERVALS:
        length = FIXED_INTERVALS[interval]
        if start_ms is not None:
            first = max(ceil(interval, start_ms), lowest)
            return list(range(first, min(highest, first + (limit - 1) * length) + 1, length))
        first = max(lowest, highest - (limit - 1) * length)
        return list(range(first, highest + 1, length))
    opens: list[int] = []
    if start_ms is not None:
        t = max(ceil(interval, start_ms), lowest)
        while t <= highest and len(opens) < limit:
            opens.append(t)
            t = next_open(interval, t)
        return opens
    t = highest
    while t >= lowest and len(opens) < limit:
        opens.append(t)
        t = previous_open(interval, t)
    opens.reverse()
    return opens
