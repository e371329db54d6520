"""Our metrics against Freqtrade's own functions (freqtrade/data/metrics.py) on the same trades."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from freqtrade.data.metrics import (
    calculate_calmar,
    calculate_expectancy,
    calculate_max_drawdown,
    calculate_sharpe,
    calculate_sortino,
    calculate_sqn,
)

from management_server.analytics.metrics import TradeRow, compute, starting_balance_of

BOT = uuid.UUID("00000000-0000-0000-0000-000000000001")
START = datetime(2026, 11, 1, tzinfo=UTC)


def random_trades(seed: int, count: int, open_trades: int = 0) -> list[TradeRow]:
    rng = random.Random(seed)
    trades = []
    opened = START
    for i in range(count + open_trades):
        opened += timedelta(minutes=rng.randint(1, 600), seconds=rng.randint(0, 59))
        stake = rng.choice([50.0, 100.0, 250.0])
        ratio = rng.gauss(0.002, 0.03) if rng.random() > 0.1 else 0.0
        is_open = i >= count
        trades.append(
            TradeRow(
                bot_id=BOT,
                trade_id=i + 1,
                pair=rng.choice(["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]),
                is_open=is_open,
                open_date=opened,
                close_date=None if is_open else opened + timedelta(minutes=rng.randint(1, 3000)),
                stake_amount=stake,
                profit_abs=None if is_open else round(stake * ratio, 8),
                profit_ratio=None if is_open else ratio,
            )
        )
    return trades


def freqtrade_figures(trades: list[TradeRow], starting_balance: float) -> dict[str, float]:
    """What RPC._rpc_trade_statistics computes, with Freqtrade's functions, from the same trades."""
    closed = [t for t in trades if not t.is_open and t.close_date]
    frame = pd.DataFrame(
        [
            {
                "close_date": t.close_date.strftime("%Y-%m-%d %H:%M:%S") if t.close_date else None,
                "close_date_dt": t.close_date,
                "profit_abs": t.profit_abs,
            }
            for t in closed
        ]
    )
    by_id = sorted(trades, key=lambda t: t.trade_id)
    first, last = by_id[0].open_date, by_id[-1].open_date
    drawdown = calculate_max_drawdown(
        frame, value_col="profit_abs", date_col="close_date_dt", starting_balance=starting_balance
    )
    expectancy, expectancy_ratio = calculate_expectancy(frame)
    return {
        "expectancy": expectancy,
        "expectancy_ratio": expectancy_ratio,
        "max_drawdown_abs": drawdown.drawdown_abs,
        "max_drawdown_ratio": drawdown.relative_account_drawdown,
        "max_drawdown_start": drawdown.high_date.isoformat(),
        "max_drawdown_end": drawdown.low_date.isoformat(),
        "drawdown_high": drawdown.high_value,
        "drawdown_low": drawdown.low_value,
        "current_drawdown_abs": drawdown.current_drawdown_abs,
        "current_drawdown_ratio": drawdown.current_relative_account_drawdown,
        "current_drawdown_start": drawdown.current_high_date.isoformat(),
        "sharpe": calculate_sharpe(frame, first, last, starting_balance),
        "sortino": calculate_sortino(frame, first, last, starting_balance),
        "calmar": calculate_calmar(frame, first, last, starting_balance),
        "sqn": calculate_sqn(frame, starting_balance),
    }


@pytest.mark.parametrize(("seed", "count", "open_trades"), [(1, 5, 0), (2, 40, 2), (3, 400, 1), (4, 2, 0)])
def test_metrics_equal_freqtrades_functions(seed: int, count: int, open_trades: int) -> None:
    trades = random_trades(seed, count, open_trades)
    balance = starting_balance_of(True, 10_000.0, None)
    assert balance == pytest.approx(9_900.0)
    ours = compute(trades, balance)
    theirs = freqtrade_figures(trades, balance)
    for key, value in theirs.items():
        expected = value if isinstance(value, str) else pytest.approx(value, rel=1e-9, abs=1e-12)
        assert ours[key] == expected, key
    closed = [t for t in trades if not t.is_open]
    wins = [t for t in closed if (t.profit_ratio or 0) >= 0]
    losses = [t for t in closed if (t.profit_ratio or 0) < 0]
    assert ours["trade_count"] == count + open_trades
    assert (ours["closed_trade_count"], ours["open_trade_count"]) == (count, open_trades)
    assert (ours["winning_trades"], ours["losing_trades"]) == (len(wins), len(losses))
    assert ours["win_rate"] == pytest.approx(len(wins) / count)
    total = round(sum(t.profit_abs or 0 for t in closed), 8)
    assert ours["profit_abs"] == total
    assert ours["profit_ratio"] == pytest.approx(total / balance)
    win_sum, loss_sum = sum(t.profit_abs or 0 for t in wins), sum(t.profit_abs or 0 for t in losses)
    assert ours["profit_factor"] == (pytest.approx(win_sum / abs(loss_sum)) if losses else None)
    assert ours["equity_curve"][-1]["profit_abs"] == pytest.approx(total)
    assert sum(d["trade_count"] for d in ours["daily"]) == count


def test_no_trades_and_unknown_balance() -> None:
    empty = compute([], 990.0)
    assert (empty["trade_count"], empty["win_rate"], empty["profit_abs"], empty["max_drawdown_abs"]) == (0, 0.0, 0, 0)
    assert (empty["sharpe"], empty["best_pair"], empty["equity_curve"], empty["daily"]) == (0.0, None, [], [])
    unknown = compute(random_trades(7, 10), starting_balance_of(False, None, {"profit_closed_coin": 0.0}))
    assert unknown["starting_balance"] is None
    assert (unknown["profit_ratio"], unknown["max_drawdown_ratio"], unknown["sharpe"]) == (None, None, None)
    assert unknown["max_drawdown_abs"] > 0
    live = starting_balance_of(False, None, {"profit_closed_coin": 12.5, "profit_closed_ratio": 0.0125})
    assert live == pytest.approx(1000.0)


def test_long_equity_curve_is_thinned_but_ends_at_the_total() -> None:
    trades = random_trades(11, 3000)
    result = compute(trades, 9900.0, equity_points=100)
    curve = result["equity_curve"]
    assert len(curve) <= 100
    assert curve[-1]["profit_abs"] == pytest.approx(result["profit_abs"])
    assert [p["date"] for p in curve] == sorted(p["date"] for p in curve)
