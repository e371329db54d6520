"""The exchange part of a Freqtrade bot's config: the offline simulator or a real exchange.

A bot is pointed at the exchange simulator or at a real exchange by its config alone:

>>> section = render_exchange_section("simulator", ["BTC/USDT"], simulator_url="http://127.0.0.1:8002")
>>> section["name"], section["ccxt_config"]["urls"]["api"]["public"]
('binance', 'http://127.0.0.1:8002/api/v3')

For the simulator, ccxt's ``binance`` class is aimed at the simulator's ``/api/v3`` (sync and async
clients), made to load spot markets only (else it also calls the futures hosts and the bot cannot
start), and kept away from endpoints the simulator does not have: websockets (``enable_ws``),
Binance's public data archive (``only_from_ccxt``) and the wallet's currency list
(``fetchCurrencies``). :func:`offline_config` adds what a bot needs beside its ``exchange`` section
on a machine without internet. Credentials of a real exchange are filled in by the caller and are
never logged: log :func:`redact_exchange_section` of a section, never the section itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SIMULATOR = "simulator"
SIMULATOR_CCXT_NAME = "binance"
SECRET_EXCHANGE_KEYS = frozenset(
    {"key", "secret", "password", "uid", "apiKey", "api_key", "private_key", "privateKey", "wallet_address"}
)
REDACTED = "***"
PUBLIC_API_SUFFIX = "/api/v3"  # what ccxt's public API URL adds to the simulator's (or the relay's) base URL
_CCXT_ID = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


@dataclass(frozen=True)
class ExchangeCredentials:
    """A real exchange's API credentials (``password`` and ``uid`` only where the exchange wants them)."""

    key: str = field(repr=False)
    secret: str = field(repr=False)
    password: str | None = field(default=None, repr=False)
    uid: str | None = field(default=None, repr=False)


def _simulator_ccxt_config(simulator_url: str) -> dict[str, Any]:
    return {
        "urls": {"api": {"public": simulator_url.rstrip("/") + PUBLIC_API_SUFFIX}},
        "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
    }


def render_exchange_section(
    exchange: str,
    pairs: Sequence[str],
    *,
    simulator_url: str | None = None,
    credentials: ExchangeCredentials | None = None,
    pair_blacklist: Sequence[str] = (),
    ccxt_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``exchange`` section of a Freqtrade config.

    :param exchange: ``"simulator"`` for the exchange simulator, else a ccxt exchange id (``binance``,
        ``kraken``, ...).
    :param pairs: the bot's pair whitelist (``BASE/QUOTE``).
    :param simulator_url: the simulator's base URL (``http://127.0.0.1:8002``); required for the simulator.
    :param credentials: API credentials of a real exchange (a dry-run bot needs none); refused for the
        simulator, which has no private API.
    :param pair_blacklist: pairs the bot must never trade.
    :param ccxt_config: extra ccxt settings of a real exchange (e.g. ``{"enableRateLimit": true}``),
        applied to the sync and async clients.
    """
    if not pairs:
        raise ValueError("a bot needs at least one pair")
    section: dict[str, Any] = {
        "pair_whitelist": list(pairs),
        "pair_blacklist": list(pair_blacklist),
    }
    if exchange == SIMULATOR:
        if simulator_url is None:
            raise ValueError("the simulator's URL is needed to point a bot at it")
        if not simulator_url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {simulator_url!r}")
        if credentials is not None:
            raise ValueError("the exchange simulator takes no credentials")
        if ccxt_config:
            raise ValueError("the simulator's ccxt settings are fixed")
        ccxt = _simulator_ccxt_config(simulator_url)
        return {
            "name": SIMULATOR_CCXT_NAME,
            "key": "",
            "secret": "",
            **section,
            "ccxt_config": ccxt,
            "ccxt_async_config": ccxt,
            "enable_ws": False,
            "only_from_ccxt": True,
        }
    if not _CCXT_ID.match(exchange):
        raise ValueError(f"not a ccxt exchange id: {exchange!r}")
    if simulator_url is not None:
        raise ValueError("simulator_url is only for the exchange simulator")
    real: dict[str, Any] = {"name": exchange, "key": "", "secret": "", **section}
    if credentials is not None:
        real["key"] = credentials.key
        real["secret"] = credentials.secret
        if credentials.password is not None:
            real["password"] = credentials.password
        if credentials.uid is not None:
            real["uid"] = credentials.uid
    if ccxt_config:
        real["ccxt_config"] = dict(ccxt_config)
        real["ccxt_async_config"] = dict(ccxt_config)
    return real


def offline_config() -> dict[str, Any]:
    """Top-level keys a bot needs to run without internet (whatever its exchange).

    Telegram is off, and there is deliberately no ``fiat_display_currency``: with one, Freqtrade asks
    CoinGecko for conversion rates. A caller merging this into a config must also drop any
    ``fiat_display_currency`` it carries.
    """
    return {"telegram": {"enabled": False, "token": "", "chat_id": ""}}


def redact_exchange_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """A copy fit for logs and API answers: non-empty credentials (nested ones too) become ``***``."""
    return {
        k: REDACTED if k in SECRET_EXCHANGE_KEYS and v else redact_exchange_section(v) if isinstance(v, Mapping) else v
        for k, v in section.items()
    }
