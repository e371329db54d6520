"""Trading metrics from a set of trades, with Freqtrade's definitions.

Every figure here is defined as Freqtrade defines it for a bot's ``/api/v1/profit``
(``freqtrade/rpc/rpc.py: RPC._rpc_trade_statistics``) and in ``freqtrade/data/metrics.py``
(``calculate_max_drawdown``, ``calculate_expectancy``, ``calculate_sharpe``, ``calculate_sortino``,
``calculate_calmar``, ``calculate_sqn``), so the numbers of one bot equal the bot's own; the tests
check them against both. The fleet and a user's bots are one pool of trades whose starting balance
is the sum of their bots'.

Why not call Freqtrade's functions (a pinned dependency)? They take pandas DataFrames, and
``freqtrade.data.metrics`` imports pandas, SciPy and Freqtrade's data converters (2.3 s and over
100 MB per management process); building frames costs more than the arithmetic for the few hundred
trades a bot has. The definitions are short, so they are written out here on NumPy arrays, line by
line with Freqtrade's, and the tests compare the results on the same trades.

Freqtrade's conventions kept on purpose:

- a closed trade with a profit ratio of 0 counts as a win (``winning_trades``), but not in the
  expectancy, which splits on the absolute profit (> 0, < 0);
- Sharpe, Sortino and Calmar divide the profit by the number of days between the first and the
  last trade's *open* date (at least 1), and are annualised with sqrt(365); Sortino's deviation is
  over losing trades only; a zero or undefined deviation (or drawdown, for Calmar) gives -100;
- the max drawdown is measured on closed trades in close order, from a high-water mark that starts
  at 0, relative to the starting balance plus that mark;
- the profit factor is undefined (Freqtrade: infinity) without a losing trade: None here.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

# Freqtrade's default `tradable_balance_ratio`: the share of the wallet a bot trades with, which is its
# starting balance (`Wallets.get_starting_balance`). The gateway renders no other value.
TRADABLE_BALANCE_RATIO = 0.99
# Freqtrade's default `dry_run_wallet` when a bot's config names none.
DEFAULT_DRY_RUN_WALLET = 1000.0
NOT_OPTIMAL = -100.0  # what Freqtrade answers for a ratio whose denominator is zero or undefined
EQUITY_POINTS = 500  # longest equity curve returned; longer ones are thinned evenly in time
DAILY_DAYS = 366  # days of daily P&L returned (the latest days with closed trades)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS = timedelta(microseconds=1)
DAY_US = 86_400_000_000


def to_us(when: datetime) -> int:
    """Microseconds since the Unix epoch (exact: no float on the way)."""
    return (when - EPOCH) // MICROS


def from_us(value: int | np.integer[Any]) -> datetime:
    return EPOCH + timedelta(microseconds=int(value))


@dataclass(frozen=True)
class TradeRow:
    """One trade as the figures need it (tests and small sets; large sets load straight into ``Trades``)."""

    bot_id: uuid.UUID
    trade_id: int
    pair: str
    is_open: bool
    open_date: datetime
    close_date: datetime | None
    stake_amount: float
    profit_abs: float | None
    profit_ratio: float | None


@dataclass(frozen=True)
class Trades:
    """A set of trades as columns: times in microseconds since the epoch, a closed trade's close time >= 0
    (-1 when open), pairs and bots as indexes into ``pairs`` and the caller's list of bots."""

    bot: IntArray
    trade_id: IntArray
    pair: IntArray
    pairs: list[str]
    is_open: BoolArray
    open_us: IntArray
    close_us: IntArray
    stake: FloatArray
    profit_abs: FloatArray
    profit_ratio: FloatArray

    def __len__(self) -> int:
        return len(self.bot)

    def take(self, index: IntArray | BoolArray) -> Trades:
        return Trades(
            self.bot[index],
            self.trade_id[index],
            self.pair[index],
            self.pairs,
            self.is_open[index],
            self.open_us[index],
            self.close_us[index],
            self.stake[index],
            self.profit_abs[index],
            self.profit_ratio[index],
        )

    @classmethod
    def of(cls, rows: Sequence[TradeRow]) -> Trades:
        bots = {b: i for i, b in enumerate(sorted({r.bot_id for r in rows}))}
        pairs: dict[str, int] = {}
        return cls(
            bot=np.array([bots[r.bot_id] for r in rows], dtype=np.int64),
            trade_id=np.array([r.trade_id for r in rows], dtype=np.int64),
            pair=np.array([pairs.setdefault(r.pair, len(pairs)) for r in rows], dtype=np.int64),
            pairs=list(pairs),
            is_open=np.array([r.is_open for r in rows], dtype=np.bool_),
            open_us=np.array([to_us(r.open_date) for r in rows], dtype=np.int64),
            close_us=np.array([-1 if r.close_date is None else to_us(r.close_date) for r in rows], dtype=np.int64),
            stake=np.array([r.stake_amount for r in rows], dtype=np.float64),
            profit_abs=np.array([math.nan if r.profit_abs is None else r.profit_abs for r in rows], dtype=np.float64),
            profit_ratio=np.array(
                [math.nan if r.profit_ratio is None else r.profit_ratio for r in rows], dtype=np.float64
            ),
        )

    def closed(self) -> Trades:
        """The closed trades in close order (ties: by bot, then trade id)."""
        index = np.flatnonzero(~self.is_open & (self.close_us >= 0))
        order = np.lexsort((self.trade_id[index], self.bot[index], self.close_us[index]))
        return self.take(index[order])


@dataclass(frozen=True)
class Drawdown:
    """``freqtrade.data.metrics.DrawDownResult`` (with the dates as datetimes)."""

    drawdown_abs: float = 0.0
    high_date: datetime | None = None
    low_date: datetime | None = None
    high_value: float = 0.0
    low_value: float = 0.0
    relative: float | None = 0.0
    current_high_date: datetime | None = None
    current_high_value: float = 0.0
    current_drawdown_abs: float = 0.0
    current_relative: float | None = 0.0


def starting_balance_of(
    dry_run: bool, dry_run_wallet: float | None, last_profit: dict[str, Any] | None
) -> float | None:
    """The balance a bot's ratios are measured against, as Freqtrade computes it.

    A dry-run bot starts with its ``dry_run_wallet`` (Freqtrade's default 1000) times the tradable
    balance ratio. A live bot's wallet is on the exchange: its starting balance is read back from the
    last ``/profit`` it reported (``profit_closed_coin / profit_closed_ratio``, or the same of all
    trades); None until it has reported a non-zero profit."""
    if dry_run:
        return (dry_run_wallet if dry_run_wallet is not None else DEFAULT_DRY_RUN_WALLET) * TRADABLE_BALANCE_RATIO
    for coin, ratio in (("profit_closed_coin", "profit_closed_ratio"), ("profit_all_coin", "profit_all_ratio")):
        value, share = (last_profit or {}).get(coin), (last_profit or {}).get(ratio)
        if isinstance(value, int | float) and isinstance(share, int | float) and share != 0 and value != 0:
            balance = float(value) / float(share)
            if balance > 0 and math.isfinite(balance):
                return balance
    return None


def _annualized(mean: float, denominator: float) -> float:
    """``freqtrade.data.metrics._calculate_annualized_ratio``."""
    if denominator != 0 and not math.isnan(denominator):
        return float(mean / denominator * math.sqrt(365))
    return NOT_OPTIMAL


def _std(values: FloatArray, ddof: int = 0) -> float:
    """pandas' ``Series.std``: NaN when there are not more values than ``ddof``."""
    if len(values) <= ddof:
        return math.nan
    return float(np.std(values, ddof=ddof))


def max_drawdown(profits: FloatArray, close_us: IntArray, starting_balance: float | None) -> Drawdown:
    """``calculate_max_drawdown(value_col="profit_abs", relative=False)`` on trades already in close order."""
    if len(profits) == 0:
        return Drawdown()
    cumulative = np.concatenate(([0.0], np.cumsum(profits)))
    high = np.concatenate(([0.0], np.maximum(0.0, np.maximum.accumulate(cumulative[1:]))))
    drawdown = cumulative - high
    with np.errstate(divide="ignore", invalid="ignore"):
        if starting_balance:
            relative: FloatArray = ((starting_balance + high) - (starting_balance + cumulative)) / (
                starting_balance + high
            )
        else:
            relative = (high - cumulative) / high
        relative[0] = 0.0
    low_index = int(np.argmin(drawdown))
    high_index = int(np.argmax(high[: low_index + 1]))
    current_high_index = int(np.argmax(high[:-1]))
    last_relative = float(relative[-1])
    return Drawdown(
        drawdown_abs=abs(float(drawdown[low_index])),
        high_date=from_us(close_us[max(high_index - 1, 0)]),
        low_date=from_us(close_us[max(low_index - 1, 0)]),
        high_value=float(cumulative[high_index]),
        low_value=float(cumulative[low_index]),
        relative=float(relative[low_index]) if starting_balance else None,
        current_high_date=from_us(close_us[max(current_high_index - 1, 0)]),
        current_high_value=float(high[-1]),
        current_drawdown_abs=float(high[-1] - cumulative[-1]),
        current_relative=last_relative if starting_balance and not math.isnan(last_relative) else None,
    )


def expectancy(profits: FloatArray) -> tuple[float, float]:
    """``calculate_expectancy``: (expectancy, expectancy ratio)."""
    if len(profits) == 0:
        return 0.0, 100.0
    wins, losses = profits[profits > 0], profits[profits < 0]
    average_win = float(wins.sum() / len(wins)) if len(wins) else 0.0
    average_loss = float(abs(losses.sum()) / len(losses)) if len(losses) else 0.0
    win_rate, loss_rate = len(wins) / len(profits), len(losses) / len(profits)
    value = win_rate * average_win - loss_rate * average_loss
    ratio = ((1 + average_win / average_loss) * win_rate) - 1 if average_loss > 0 else 100.0
    return value, ratio


def _period(first: datetime | None, last: datetime | None) -> int | None:
    if first is None or last is None or first == last:
        return None
    return max(1, (last - first).days)


def sharpe(profits: FloatArray, first: datetime | None, last: datetime | None, starting_balance: float) -> float:
    """``calculate_sharpe``."""
    days = _period(first, last)
    if len(profits) == 0 or days is None:
        return 0.0
    returns = profits / starting_balance
    return _annualized(float(returns.sum()) / days, _std(returns))


def sortino(profits: FloatArray, first: datetime | None, last: datetime | None, starting_balance: float) -> float:
    """``calculate_sortino``: the deviation of losing trades only."""
    days = _period(first, last)
    if len(profits) == 0 or days is None:
        return 0.0
    returns = profits / starting_balance
    return _annualized(float(returns.sum()) / days, _std(profits[profits < 0] / starting_balance))


def calmar(
    profits: FloatArray, close_us: IntArray, first: datetime | None, last: datetime | None, starting_balance: float
) -> float:
    """``calculate_calmar``."""
    days = _period(first, last)
    if len(profits) == 0 or days is None:
        return 0.0
    mean = float(profits.sum()) / starting_balance / days * 100
    relative = max_drawdown(profits, close_us, starting_balance).relative or 0.0
    return _annualized(mean, relative)


def sqn(profits: FloatArray, starting_balance: float) -> float:
    """``calculate_sqn`` (Van Tharp's system quality number), rounded as Freqtrade rounds it."""
    if len(profits) == 0:
        return 0.0
    returns = profits / starting_balance
    deviation = _std(returns, ddof=1)
    if deviation != 0 and not math.isnan(deviation):
        return round(math.sqrt(len(returns)) * float(returns.mean()) / deviation, 4)
    return NOT_OPTIMAL


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _duration(seconds: float) -> str:
    """Freqtrade's ``avg_duration`` text: ``str(timedelta)`` without the fraction."""
    return str(timedelta(seconds=seconds)).split(".")[0]


def _pairs(closed: Trades) -> list[dict[str, Any]]:
    """Closed trades by pair, best first, as ``Trade._generic_performance_query``: the profit of a pair
    relative to what was staked on it."""
    size = len(closed.pairs)
    profit = np.bincount(closed.pair, weights=closed.profit_abs, minlength=size)
    stake = np.bincount(closed.pair, weights=closed.stake, minlength=size)
    count = np.bincount(closed.pair, minlength=size)
    present = [i for i in range(size) if count[i] > 0]
    present.sort(key=lambda i: (-float(profit[i]), closed.pairs[i]))
    return [
        {
            "pair": closed.pairs[i],
            "profit_abs": float(profit[i]),
            "profit_ratio": float(profit[i] / stake[i]) if stake[i] else 0.0,
            "trade_count": int(count[i]),
        }
        for i in present
    ]


def _equity_curve(
    close_us: IntArray, cumulative: FloatArray, starting_balance: float | None, points: int
) -> list[dict[str, Any]]:
    """One point per closed trade; more than ``points`` are thinned to the last trade of each of ``points``
    equal spans of time (the final point always kept)."""
    n = len(close_us)
    if n == 0:
        return []
    if n <= points:
        keep = np.arange(n)
    else:
        span = max(int(close_us[-1] - close_us[0]), 1)
        bucket = np.minimum(points - 1, (close_us - close_us[0]) * points // span)
        keep = np.flatnonzero(np.append(bucket[1:] != bucket[:-1], True))
    return [
        {
            "date": _iso(from_us(close_us[i])),
            "profit_abs": round(float(cumulative[i]), 8),
            "balance": None if starting_balance is None else round(starting_balance + float(cumulative[i]), 8),
        }
        for i in keep
    ]


def _daily(close_us: IntArray, profits: FloatArray, starting_balance: float | None, days: int) -> list[dict[str, Any]]:
    """P&L per UTC day of closing (days with a closed trade), with the balance at the day's start."""
    if len(close_us) == 0:
        return []
    day, inverse = np.unique(close_us // DAY_US, return_inverse=True)
    profit = np.bincount(inverse, weights=profits, minlength=len(day))
    count = np.bincount(inverse, minlength=len(day))
    before = np.concatenate(([0.0], np.cumsum(profit)[:-1]))
    rows: list[dict[str, Any]] = []
    for i in range(max(0, len(day) - days), len(day)):
        balance = None if starting_balance is None else starting_balance + float(before[i])
        rows.append(
            {
                "date": (EPOCH + timedelta(days=int(day[i]))).date().isoformat(),
                "profit_abs": round(float(profit[i]), 8),
                "trade_count": int(count[i]),
                "starting_balance": None if balance is None else round(balance, 8),
                "profit_ratio": None if not balance or balance <= 0 else round(float(profit[i]) / balance, 8),
            }
        )
    return rows


def _columns(trades: Trades | Sequence[TradeRow]) -> Trades:
    return trades if isinstance(trades, Trades) else Trades.of(trades)


def compute(
    trades: Trades | Sequence[TradeRow],
    starting_balance: float | None,
    *,
    equity_points: int = EQUITY_POINTS,
    daily_days: int = DAILY_DAYS,
) -> dict[str, Any]:
    """Every figure of the analytics response for this set of trades (open and closed)."""
    every = _columns(trades)
    closed = every.closed()
    profits = np.nan_to_num(closed.profit_abs)
    ratios = np.nan_to_num(closed.profit_ratio)
    wins = ratios >= 0
    winning_profit = float(profits[wins].sum())
    losing_profit = float(profits[~wins].sum())
    profit_abs = round(float(profits.sum()), 8)
    # Freqtrade's first and last trade are by id over open and closed trades: for one bot, by open date.
    first = from_us(every.open_us.min()) if len(every) else None
    last = from_us(every.open_us.max()) if len(every) else None
    durations = (closed.close_us - closed.open_us) / 1e6
    average_duration = float(durations.sum()) / float(len(durations) or 1)
    balance = starting_balance if starting_balance and starting_balance > 0 else None
    drawdown = max_drawdown(profits, closed.close_us, balance)
    value, ratio = expectancy(profits)
    pairs = _pairs(closed)
    cumulative = np.cumsum(profits)
    return {
        "trade_count": len(every),
        "closed_trade_count": len(closed),
        "open_trade_count": int(every.is_open.sum()),
        "winning_trades": int(wins.sum()),
        "losing_trades": int((~wins).sum()),
        "win_rate": float(wins.sum()) / len(closed) if len(closed) else 0.0,
        "starting_balance": balance,
        "profit_abs": profit_abs,
        "profit_ratio": profit_abs / balance if balance else None,
        "profit_ratio_mean": float(ratios.mean()) if len(ratios) else 0.0,
        "profit_ratio_sum": float(ratios.sum()),
        "winning_profit_abs": winning_profit,
        "losing_profit_abs": losing_profit,
        "profit_factor": winning_profit / abs(losing_profit) if losing_profit else None,
        "expectancy": value,
        "expectancy_ratio": ratio,
        "max_drawdown_abs": drawdown.drawdown_abs,
        "max_drawdown_ratio": drawdown.relative if balance else None,
        "max_drawdown_start": _iso(drawdown.high_date),
        "max_drawdown_end": _iso(drawdown.low_date),
        "drawdown_high": drawdown.high_value,
        "drawdown_low": drawdown.low_value,
        "current_drawdown_abs": drawdown.current_drawdown_abs,
        "current_drawdown_ratio": drawdown.current_relative if balance else None,
        "current_drawdown_start": _iso(drawdown.current_high_date),
        "sharpe": sharpe(profits, first, last, balance) if balance else None,
        "sortino": sortino(profits, first, last, balance) if balance else None,
        "calmar": calmar(profits, closed.close_us, first, last, balance) if balance else None,
        "sqn": sqn(profits, balance) if balance else None,
        "avg_duration_seconds": average_duration,
        "avg_duration": _duration(average_duration),
        "best_pair": pairs[0] if pairs else None,
        "worst_pair": pairs[-1] if pairs else None,
        "first_trade_date": _iso(first),
        "latest_trade_date": _iso(last),
        "daily": _daily(closed.close_us, profits, balance, daily_days),
        "equity_curve": _equity_curve(closed.close_us, cumulative, balance, equity_points),
    }


def summary(trades: Trades | Sequence[TradeRow], starting_balance: float | None) -> dict[str, Any]:
    """The headline figures of ``compute`` (for lists of bots and users)."""
    every = _columns(trades)
    closed = every.closed()
    profits = np.nan_to_num(closed.profit_abs)
    wins = int((np.nan_to_num(closed.profit_ratio) >= 0).sum())
    balance = starting_balance if starting_balance and starting_balance > 0 else None
    drawdown = max_drawdown(profits, closed.close_us, balance)
    profit_abs = round(float(profits.sum()), 8)
    return {
        "trade_count": len(every),
        "closed_trade_count": len(closed),
        "win_rate": wins / len(closed) if len(closed) else 0.0,
        "profit_abs": profit_abs,
        "profit_ratio": profit_abs / balance if balance else None,
        "max_drawdown_abs": drawdown.drawdown_abs,
        "max_drawdown_ratio": drawdown.relative if balance else None,
    }
