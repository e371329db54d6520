"""The exchange section of a bot's config: the simulator, a real exchange, and no leaked secrets."""

from __future__ import annotations

import json

import pytest

from shared.exchange import ExchangeCredentials, offline_config, redact_exchange_section, render_exchange_section


def test_simulator_section_points_ccxt_at_the_simulator_only() -> None:
    section = render_exchange_section("simulator", ["BTC/USDT", "ETH/USDT"], simulator_url="http://127.0.0.1:8002/")
    assert section["name"] == "binance"
    assert section["pair_whitelist"] == ["BTC/USDT", "ETH/USDT"]
    for key in ("ccxt_config", "ccxt_async_config"):
        ccxt = section[key]
        assert ccxt["urls"] == {"api": {"public": "http://127.0.0.1:8002/api/v3"}}
        assert ccxt["options"]["fetchMarkets"] == {"types": ["spot"]}
        assert ccxt["options"]["fetchCurrencies"] is False
    assert section["enable_ws"] is False
    assert section["only_from_ccxt"] is True
    assert (section["key"], section["secret"]) == ("", "")
    json.dumps(section)  # it goes into a config file


def test_real_exchange_section_carries_the_callers_credentials() -> None:
    creds = ExchangeCredentials(key="k-123", secret="s-456", password="p-789")
    section = render_exchange_section(
        "kraken", ["BTC/EUR"], credentials=creds, pair_blacklist=["DOGE/EUR"], ccxt_config={"enableRateLimit": True}
    )
    assert section["name"] == "kraken"
    assert (section["key"], section["secret"], section["password"]) == ("k-123", "s-456", "p-789")
    assert "uid" not in section
    assert section["pair_blacklist"] == ["DOGE/EUR"]
    assert section["ccxt_config"] == section["ccxt_async_config"] == {"enableRateLimit": True}
    assert "only_from_ccxt" not in section  # a real exchange may use its own data sources
    assert "s-456" not in repr(creds)
    dry = render_exchange_section("binance", ["BTC/USDT"])
    assert (dry["key"], dry["secret"]) == ("", "")  # a dry-run bot needs no keys


def test_redaction_hides_every_credential() -> None:
    creds = ExchangeCredentials(key="k-123", secret="s-456", uid="u-1")
    section = render_exchange_section("binance", ["BTC/USDT"], credentials=creds, ccxt_config={"apiKey": "nested"})
    text = json.dumps(redact_exchange_section(section))
    for secret in ("k-123", "s-456", "u-1", "nested"):
        assert secret not in text
    assert redact_exchange_section(section)["name"] == "binance"
    assert section["key"] == "k-123"  # the original is left alone


@pytest.mark.parametrize(
    ("exchange", "kwargs", "message"),
    [
        ("simulator", {}, "URL"),
        ("simulator", {"simulator_url": "127.0.0.1:8002"}, "http"),
        ("simulator", {"simulator_url": "http://x", "credentials": ExchangeCredentials("k", "s")}, "no credentials"),
        ("simulator", {"simulator_url": "http://x", "ccxt_config": {"timeout": 1}}, "fixed"),
        ("Binance ", {}, "ccxt exchange id"),
        ("binance", {"simulator_url": "http://x"}, "only for the exchange simulator"),
    ],
)
def test_bad_input_is_refused(exchange: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_exchange_section(exchange, ["BTC/USDT"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one pair"):
        render_exchange_section("simulator", [], simulator_url="http://x")


def test_offline_config() -> None:
    config = offline_config()
    assert config["telegram"]["enabled"] is False
    assert "fiat_display_currency" not in config
