"""What the relay knows of an exchange's REST API: one adapter per exchange.

An adapter says where the exchange's public REST API lives under its base URL (``prefix``), what each request
weighs against the IP's budget, how long an answer may be served again, which response header carries the IP's
used weight, and the budget itself. Exchanges without an adapter are not relayed: their bots reach the exchange
directly, and their status says so.

Adding an exchange: write its ``weight`` and ``lifetime`` from the exchange's documented limits (a request the
adapter does not know weighs what the exchange charges by default and is never cached), name the header that
reports the used weight, set the default limit and say where the exchange states its own (``limit_in``), and add it
to :data:`ADAPTERS` under the ccxt id the bots use. Its bots' config must then point ccxt's public API URL at the
relay (:func:`shared.exchange.render_exchange_section`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared import binance_api


@dataclass(frozen=True)
class Adapter:
    name: str
    prefix: str  # the REST API's path under the exchange's base URL; the relay forwards nothing else
    weight: Callable[[str, Mapping[str, str]], int]  # (path after the prefix, query) -> request weight
    lifetime: Callable[[str, Mapping[str, str], int], float | None]  # (path, query, now ms) -> seconds, None: never
    used_weight_header: str
    limit: int  # request weight per minute per IP, until the exchange says otherwise
    limit_in: Callable[[str, bytes], int | None]  # (path, answer) -> the limit an answer states (exchangeInfo)
    signed_params: frozenset[str] = frozenset()  # a query with one of these is a private (signed) request
    key_headers: frozenset[str] = frozenset()  # a request with one of these carries an API key: private

    def is_private(self, method: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        return (
            method != "GET"
            or any(p in params for p in self.signed_params)
            or any(h in headers for h in self.key_headers)
        )


BINANCE = Adapter(
    name="binance",
    prefix=binance_api.PREFIX,
    weight=binance_api.weight,
    lifetime=binance_api.lifetime,
    used_weight_header=binance_api.USED_WEIGHT_HEADER,
    limit=binance_api.REQUEST_WEIGHT,
    limit_in=binance_api.limit_in,
    signed_params=frozenset({"signature"}),
    key_headers=frozenset({"x-mbx-apikey"}),
)

# By the exchange a bot's spec names. The simulator is Binance's API.
ADAPTERS: dict[str, Adapter] = {"simulator": BINANCE}


def adapter_for(exchange: str) -> Adapter | None:
    return ADAPTERS.get(exchange)
