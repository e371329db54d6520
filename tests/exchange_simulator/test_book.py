"""The order book: centred on the last price, on the tick grid, deep enough, fresh every second."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchange_simulator.book import order_book, round_price
from exchange_simulator.markets import market_spec

NOW_MS = 1_773_581_862_000


@pytest.mark.parametrize(("pair", "price"), [("BTC/USDT", 65_432.123), ("DOGE/USDT", 0.151234), ("ETH/BTC", 0.0491)])
def test_book_is_centred_on_the_last_price_and_on_the_grid(pair: str, price: float) -> None:
    spec = market_spec(pair, 7)
    book = order_book(spec, 7, price, NOW_MS, 100)
    last = round_price(spec, price)
    assert len(book.bids) == len(book.asks) == 100
    assert book.mid == pytest.approx(last, abs=spec.tick_f / 10)
    assert book.bids[0][0] < last < book.asks[0][0]
    spread = (book.asks[0][0] - book.bids[0][0]) / last
    assert spread < 0.0005  # a liquid market: a few basis points at most
    prices = [p for p, _ in book.bids]
    assert prices == sorted(prices, reverse=True)
    assert len(set(prices)) == len(prices)
    prices = [p for p, _ in book.asks]
    assert prices == sorted(prices)
    assert len(set(prices)) == len(prices)
    for p, q in book.bids + book.asks:
        assert Decimal(repr(p)) % spec.tick == 0
        assert Decimal(repr(q)) % spec.step == 0
        assert q >= spec.step_f
    # Enough depth for any sensible dry-run order: the first ten levels hold thousands of USDT.
    assert sum(p * q for p, q in book.asks[:10]) > 10_000 * (1 if spec.quote == "USDT" else 1 / 65_000)


def test_book_is_deterministic_within_a_second_and_changes_after() -> None:
    spec = market_spec("ETH/USDT", 7)
    a = order_book(spec, 7, 3210.5, NOW_MS, 20)
    b = order_book(spec, 7, 3210.5, NOW_MS + 999, 20)
    c = order_book(spec, 7, 3210.5, NOW_MS + 1000, 20)
    other_seed = order_book(spec, 8, 3210.5, NOW_MS, 20)
    assert a.bids == b.bids
    assert a.asks == b.asks
    assert [q for _, q in a.bids] != [q for _, q in c.bids]
    assert [q for _, q in a.bids] != [q for _, q in other_seed.bids]
    assert c.last_update_id > a.last_update_id


def test_book_depth_and_tiny_prices() -> None:
    spec = market_spec("DOGE/USDT", 7)
    assert len(order_book(spec, 7, 0.15, NOW_MS, 5).asks) == 5
    assert len(order_book(spec, 7, 0.15, NOW_MS, 10_000).asks) == 5000  # Binance's maximum
    # A price of a few ticks: no bid at or below zero.
    tiny = order_book(spec, 7, 0.00003, NOW_MS, 100)
    assert all(p > 0 for p, _ in tiny.bids)
    assert len(tiny.asks) == 100
