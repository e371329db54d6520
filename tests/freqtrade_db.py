"""A Freqtrade trade database with closed and open trades, each with its orders, written by Freqtrade's own models
(as a bot would have written it): ``python -m tests.freqtrade_db <db url> <closed> <open>`` (a process of its own,
since Freqtrade's models hold their session globally)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

PAIRS = ("BTC/USDT", "ETH/USDT")


def _filled(order: Any, side: str, pair: str, amount: float, price: float, order_id: str, at: datetime) -> Any:
    """A limit order filled at once, as Freqtrade records one."""
    return order(
        ft_order_side=side,
        ft_pair=pair,
        ft_is_open=False,
        ft_amount=amount,
        ft_price=price,
        order_id=order_id,
        status="closed",
        symbol=pair,
        order_type="limit",
        side=side,
        price=price,
        average=price,
        amount=amount,
        filled=amount,
        remaining=0.0,
        cost=price * amount,
        order_date=at,
        order_filled_date=at + timedelta(seconds=5),
    )


def write(url: str, closed: int, open_: int) -> None:
    from freqtrade.persistence import Order, Trade, init_db

    init_db(url)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(closed + open_):
        is_open = n >= closed
        pair = PAIRS[n % len(PAIRS)]
        opened = start + timedelta(hours=n)
        rate = 100.0 + n * 1.25
        amount = round(10.0 / rate, 8)
        trade = Trade(
            pair=pair,
            base_currency=pair.split("/")[0],
            stake_currency="USDT",
            stake_amount=10.0,
            amount=amount,
            amount_requested=amount,
            fee_open=0.001,
            fee_close=0.001,
            open_rate=rate,
            open_rate_requested=rate,
            open_date=opened,
            is_open=is_open,
            exchange="binance",
            strategy="AlwaysEnter",
            timeframe=5,
            enter_tag=f"tag-{n % 4}",
        )
        trade.orders.append(_filled(Order, "buy", pair, amount, rate, f"entry-{n}", opened))
        if not is_open:
            exit_rate = rate * (1.01 if n % 3 else 0.98)
            closed_at = opened + timedelta(minutes=30)
            trade.orders.append(_filled(Order, "sell", pair, amount, exit_rate, f"exit-{n}", closed_at))
            trade.close_rate = exit_rate
            trade.close_date = closed_at
            trade.exit_reason = "roi" if n % 3 else "stop_loss"
            trade.close_profit_abs = round((exit_rate - rate) * amount, 8)
            trade.close_profit = round(exit_rate / rate - 1, 8)
        Trade.session.add(trade)
    Trade.commit()


if __name__ == "__main__":
    write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
