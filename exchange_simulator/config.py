"""Settings of the exchange simulator (environment, prefix ``FREQFLEET_``)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from exchange_simulator.limits import BAN_AFTER, WEIGHT_LIMIT
from shared.settings import CommonSettings

DEFAULT_PAIRS: tuple[str, ...] = (
    "BTC/USDT",
    "ETH/USDT",
    "BNB/USDT",
    "SOL/USDT",
    "XRP/USDT",
    "ADA/USDT",
    "DOGE/USDT",
    "LTC/USDT",
    "DOT/USDT",
    "LINK/USDT",
)

_PAIR = re.compile(r"^[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$")


def parse_pairs(value: Any) -> list[str]:
    """``"BTC/USDT,ETH/USDT"``, a JSON list or a list → upper-case ``BASE/QUOTE`` pairs, no duplicates."""
    if isinstance(value, str):
        text = value.strip()
        items: Any = json.loads(text) if text.startswith("[") else text.split(",")
    else:
        items = value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a comma-separated list of pairs such as BTC/USDT,ETH/USDT")
    pairs: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"not a pair: {item!r}")
        pair = item.strip().upper()
        if not pair:
            continue
        if not _PAIR.match(pair):
            raise ValueError(f"not a BASE/QUOTE pair: {item!r}")
        base, quote = pair.split("/")
        if base == quote:
            raise ValueError(f"base and quote are the same: {item!r}")
        if pair in pairs:
            raise ValueError(f"pair listed twice: {pair}")
        pairs.append(pair)
    if not pairs:
        raise ValueError("at least one pair is needed")
    ids = [p.replace("/", "") for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("two pairs map to the same exchange symbol")
    return pairs


class SimulatorSettings(CommonSettings):
    simulator_host: str = Field(default="127.0.0.1", description="Address the exchange simulator binds.")
    simulator_port: int = Field(default=8002, ge=1, le=65535, description="Port of the exchange simulator.")
    simulator_seed: int = Field(
        default=42, ge=0, lt=2**63, description="Seed of the synthetic prices: same seed, same prices."
    )
    simulator_pairs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_PAIRS),
        description="Markets the simulator lists (comma-separated BASE/QUOTE pairs).",
    )

    simulator_weight_limit: int = Field(
        default=WEIGHT_LIMIT,
        ge=0,
        description="Request weight per minute per client IP, as Binance counts it (429 past it, 418 bans for "
        "clients that keep going); 0: no limit.",
    )
    simulator_ban_after: int = Field(
        default=BAN_AFTER, ge=1, description="Requests a client sends during a Retry-After before its IP is banned."
    )

    @field_validator("simulator_pairs", mode="before")
    @classmethod
    def _parse_pairs(cls, value: Any) -> list[str]:
        return parse_pairs(value)

    @property
    def simulator_url(self) -> str:
        """Where a client on this host reaches the simulator (a wildcard bind is reached on loopback)."""
        host = self.simulator_host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.simulator_port}"


@lru_cache
def get_settings() -> SimulatorSettings:
    return SimulatorSettings()
