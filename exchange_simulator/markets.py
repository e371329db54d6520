"""The simulator's markets: symbols, filters and precisions, and each market's price character.

Well-known assets get Binance-like figures (price level, tick size, lot step, volatility, volume);
any other ``BASE/QUOTE`` pair gets figures derived from the seed, so every configured pair works.
Tick sizes and lot steps are powers of ten, as on Binance's spot markets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property

from exchange_simulator.noise import stream_key, uniform

STABLECOINS = frozenset({"USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "USD"})
MIN_NOTIONAL_USD = 5.0  # Binance's NOTIONAL filter on */USDT markets


@dataclass(frozen=True)
class AssetProfile:
    usd_price: float
    daily_volatility: float  # standard deviation of a day's log return
    daily_quote_volume_usd: float


# Rough, rounded figures: realistic orders of magnitude, not market data.
ASSETS: dict[str, AssetProfile] = {
    "BTC": AssetProfile(65_000.0, 0.030, 1.5e9),
    "ETH": AssetProfile(3_200.0, 0.040, 8.0e8),
    "BNB": AssetProfile(600.0, 0.035, 1.5e8),
    "SOL": AssetProfile(150.0, 0.050, 4.0e8),
    "XRP": AssetProfile(0.60, 0.045, 2.5e8),
    "ADA": AssetProfile(0.45, 0.050, 8.0e7),
    "DOGE": AssetProfile(0.15, 0.060, 2.0e8),
    "LTC": AssetProfile(80.0, 0.040, 6.0e7),
    "DOT": AssetProfile(7.0, 0.050, 4.0e7),
    "LINK": AssetProfile(15.0, 0.050, 6.0e7),
    "AVAX": AssetProfile(35.0, 0.055, 6.0e7),
    "TRX": AssetProfile(0.12, 0.030, 5.0e7),
    "ATOM": AssetProfile(8.0, 0.050, 3.0e7),
    "NEAR": AssetProfile(5.0, 0.060, 4.0e7),
    "UNI": AssetProfile(9.0, 0.055, 3.0e7),
}

# Binance's tick sizes / lot steps for the default markets (others follow the rule in _tick/_step).
KNOWN_FILTERS: dict[str, tuple[str, str]] = {
    "BTC/USDT": ("0.01", "0.00001"),
    "ETH/USDT": ("0.01", "0.0001"),
    "BNB/USDT": ("0.01", "0.001"),
    "SOL/USDT": ("0.01", "0.001"),
    "XRP/USDT": ("0.0001", "0.1"),
    "ADA/USDT": ("0.0001", "0.1"),
    "DOGE/USDT": ("0.00001", "1"),
    "LTC/USDT": ("0.01", "0.001"),
    "DOT/USDT": ("0.001", "0.01"),
    "LINK/USDT": ("0.01", "0.01"),
}


@dataclass(frozen=True)
class MarketSpec:
    """One spot market: Binance's view (id, filters) and the price model's parameters."""

    symbol: str  # ccxt's unified symbol, "BTC/USDT"
    base: str
    quote: str
    base_price: float  # the price level the model moves around
    tick: Decimal  # PRICE_FILTER tickSize
    step: Decimal  # LOT_SIZE stepSize
    min_notional: Decimal  # NOTIONAL minNotional, in quote
    daily_volatility: float
    daily_quote_volume: float  # in quote

    @property
    def id(self) -> str:
        """Binance's market id, "BTCUSDT"."""
        return self.base + self.quote

    @cached_property
    def price_decimals(self) -> int:
        return max(0, -self.tick.as_tuple().exponent)  # type: ignore[operator]

    @cached_property
    def qty_decimals(self) -> int:
        return max(0, -self.step.as_tuple().exponent)  # type: ignore[operator]

    @cached_property
    def tick_f(self) -> float:
        return float(self.tick)

    @cached_property
    def step_f(self) -> float:
        return float(self.step)


def _power_of_ten(exponent: int) -> Decimal:
    return Decimal(1).scaleb(exponent)


def _usd_price(asset: str, seed: int) -> float:
    if asset in STABLECOINS:
        return 1.0
    if asset in ASSETS:
        return ASSETS[asset].usd_price
    # An unknown asset: a price between 0.01 and 1000 USD, fixed by the seed.
    return float(10 ** (-2 + 5 * uniform(stream_key(seed, asset, "usd-price"), 0)))


def _profile(asset: str, seed: int) -> AssetProfile:
    if asset in ASSETS:
        return ASSETS[asset]
    key = stream_key(seed, asset, "profile")
    return AssetProfile(
        usd_price=_usd_price(asset, seed),
        daily_volatility=0.03 + 0.04 * uniform(key, 0),
        daily_quote_volume_usd=10 ** (7 + 1.5 * uniform(key, 1)),
    )


def _tick(price: float) -> Decimal:
    """About six significant digits, between 1e-8 and 0.01 (Binance's usual range)."""
    exponent = math.floor(math.log10(price)) - 5
    return _power_of_ten(min(-2, max(-8, exponent)))


def _step(price: float, quote_usd: float) -> Decimal:
    """The largest power of ten whose lot is worth at most about 0.1 USD (a fine enough lot)."""
    exponent = math.floor(math.log10(0.1 / (price * quote_usd)))
    return _power_of_ten(min(3, max(-8, exponent)))


def market_spec(pair: str, seed: int) -> MarketSpec:
    base, quote = pair.split("/")
    base_profile = _profile(base, seed)
    quote_usd = _usd_price(quote, seed)
    price = base_profile.usd_price / quote_usd
    if pair in KNOWN_FILTERS:
        tick_text, step_text = KNOWN_FILTERS[pair]
        tick, step = Decimal(tick_text), Decimal(step_text)
    else:
        tick, step = _tick(price), _step(price, quote_usd)
    min_notional = Decimal(repr(MIN_NOTIONAL_USD / quote_usd))
    # Keep the notional filter readable: about three significant digits, at least one tick.
    min_notional = max(Decimal(f"{float(min_notional):.3g}"), tick)
    return MarketSpec(
        symbol=pair,
        base=base,
        quote=quote,
        base_price=price,
        tick=tick,
        step=step,
        min_notional=min_notional,
        daily_volatility=base_profile.daily_volatility,
        daily_quote_volume=base_profile.daily_quote_volume_usd / quote_usd,
    )


def build_markets(pairs: list[str], seed: int) -> dict[str, MarketSpec]:
    """Markets by Binance id (``BTCUSDT``), in the configured order."""
    return {spec.id: spec for spec in (market_spec(pair, seed) for pair in pairs)}
