"""The order book: levels around the live price, refreshed once a second.

The book is centred on the last price rounded to the tick: best bid and best ask sit the same
number of ticks below and above it (about 1 basis point apart), so the book's mid *is* the last
price. Levels are about 1 basis point apart; each level holds a few minutes' worth of the
market's volume, with sizes from the seeded noise (a pure function of seed, pair and second),
so a dry-run market order of any sensible size fills close to the last price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exchange_simulator.markets import MarketSpec
from exchange_simulator.noise import stream_key, uniforms

HALF_SPREAD = 0.00005  # of the price: best bid/ask are about 0.5 bp from the mid
LEVEL_GAP = 0.0001  # of the price, between levels
MAX_LEVELS = 5000
DEFAULT_LEVELS = 100


@dataclass(frozen=True)
class OrderBook:
    last_update_id: int
    bids: list[tuple[float, float]]  # (price, quantity), best first
    asks: list[tuple[float, float]]

    @property
    def mid(self) -> float:
        return (self.bids[0][0] + self.asks[0][0]) / 2


def order_book(spec: MarketSpec, seed: int, price: float, now_ms: int, levels: int) -> OrderBook:
    """The book of ``levels`` levels a side at ``now_ms`` around ``price``."""
    tick = spec.tick_f
    decimals = spec.price_decimals
    centre = price_in_ticks(spec, price)
    half = max(1, round(centre * HALF_SPREAD))
    gap = max(1, round(centre * LEVEL_GAP))
    levels = min(levels, MAX_LEVELS)
    bid_count = min(levels, max(0, (centre - half - 1) // gap + 1))  # no bid at or below zero
    index = np.arange(levels, dtype=np.int64)
    second = now_ms // 1000
    key = stream_key(seed, spec.symbol, "book")
    step = spec.step_f
    level_notional = spec.daily_quote_volume / 1440 / 10
    growth = 1.0 + index / 20.0

    def sizes(side: int, prices: list[float]) -> list[float]:
        u = uniforms(key, (second * 2 + side) * MAX_LEVELS + index[: len(prices)])
        notional = level_notional * (0.3 + 1.4 * u) * growth[: len(prices)]
        qty = np.floor(notional / np.asarray(prices) / step) * step
        return [max(step, q) for q in np.round(qty, spec.qty_decimals).tolist()]

    bid_prices = [round((centre - half - i * gap) * tick, decimals) for i in range(bid_count)]
    ask_prices = [round((centre + half + i * gap) * tick, decimals) for i in range(levels)]
    return OrderBook(
        last_update_id=now_ms,
        bids=list(zip(bid_prices, sizes(0, bid_prices), strict=True)),
        asks=list(zip(ask_prices, sizes(1, ask_prices), strict=True)),
    )


def price_in_ticks(spec: MarketSpec, price: float) -> int:
    """The price as a whole number of ticks (at least one)."""
    return max(1, round(price / spec.tick_f))


def round_price(spec: MarketSpec, price: float) -> float:
    """The price on the market's tick grid: what the ticker shows and what the book is centred on."""
    return round(price_in_ticks(spec, price) * spec.tick_f, spec.price_decimals)
