"""Which pairs an exchange trades, so a bot is refused a pair its exchange does not have when it is created or
changed (not left to start and trade nothing, its whitelist empty).

For the exchange simulator the list is its ``/api/v3/exchangeInfo`` (``FREQFLEET_SIMULATOR_URL``), kept
``TTL`` seconds. A real exchange's markets are not fetched here (this host may not reach it): its gateway's
Freqtrade checks them at start, and says so in the bot's log. When the list can't be had (the simulator
away), nothing is refused on its account.
"""

from __future__ import annotations

import time

import httpx

from shared.exchange import SIMULATOR
from shared.logging import get_logger

log = get_logger(__name__)

TTL = 600.0


class Markets:
    def __init__(self, simulator_url: str, *, timeout: float = 5.0) -> None:
        self.simulator_url = simulator_url.rstrip("/")
        self.http = httpx.AsyncClient(timeout=timeout)
        self._cached: tuple[float, frozenset[str]] | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def pairs(self, exchange: str) -> frozenset[str] | None:
        """The pairs ``exchange`` trades (``BASE/QUOTE``); None when that is not known here."""
        if exchange != SIMULATOR:
            return None
        if self._cached is not None and time.monotonic() < self._cached[0]:
            return self._cached[1]
        try:
            response = await self.http.get(f"{self.simulator_url}/api/v3/exchangeInfo")
            response.raise_for_status()
            symbols = response.json()["symbols"]
            found = frozenset(
                f"{s['baseAsset']}/{s['quoteAsset']}" for s in symbols if s.get("status", "TRADING") == "TRADING"
            )
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.info("the simulator's markets are not known now", error=f"{type(exc).__name__}: {exc}"[:300])
            return None
        self._cached = (time.monotonic() + TTL, found)
        return found


def unknown_pairs(pairs: list[str], known: frozenset[str] | None) -> list[str]:
    """The pairs the exchange does not trade (a futures pair ``BASE/QUOTE:SETTLE`` by its spot part)."""
    if known is None:
        return []
    return [p for p in pairs if p.split(":")[0] not in known]
