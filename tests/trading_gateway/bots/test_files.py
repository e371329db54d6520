"""Rendering a bot's config from its spec and writing its folder (no process is started)."""

from __future__ import annotations

import copy
import json
import stat
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from freqtrade.configuration.config_validation import validate_config_schema
from pydantic import SecretStr

from shared.bus.messages import ExchangeCredentials
from shared.sealing import seal_credentials
from tests.enrollment import identity_for
from tests.trading_gateway.bots.conftest import make_spec, new_bot_id
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotConfigError, BotFiles, render_config
from trading_gateway.identity import GatewayIdentity

SIM = "http://127.0.0.1:8002"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_simulator_dry_run_config(tmp_path: Path) -> None:
    bot_id = new_bot_id()
    files = BotFiles(tmp_path / "bots", bot_id)
    creds = ApiCredentials.generate()
    spec = make_spec(("BTC/USDT", "ETH/USDT"), stoploss=-0.07, max_open_trades=2, stake_amount=Decimal("25.5"))
    config = render_config(spec, files, port=18123, credentials=creds, simulator_url=SIM, process_throttle_secs=1)
    data = config.data

    assert data["bot_name"] == bot_id  # what the identity check compares
    assert data["strategy"] == "AlwaysEnter"
    assert data["initial_state"] == "running"
    assert data["dry_run"] is True
    assert data["dry_run_wallet"] == 10_000
    assert data["force_entry_enable"] is True
    assert data["stake_currency"] == "USDT"
    assert data["stake_amount"] == 25.5
    assert data["max_open_trades"] == 2
    assert data["timeframe"] == "1m"
    assert data["stoploss"] == -0.07
    assert data["internals"]["process_throttle_secs"] == 1
    assert data["db_url"] == f"sqlite:///{tmp_path}/bots/{bot_id}/tradesv3.sqlite"
    assert data["db_url"].startswith("sqlite:////")
    api = data["api_server"]
    assert api["enabled"] is True
    assert api["listen_ip_address"] == "127.0.0.1"
    assert api["listen_port"] == 18123
    assert (api["username"], api["password"]) == (creds.username, creds.password)
    assert len(api["jwt_secret_key"]) >= 32
    exchange = data["exchange"]
    assert exchange["name"] == "binance"
    assert exchange["pair_whitelist"] == ["BTC/USDT", "ETH/USDT"]
    assert exchange["ccxt_config"]["urls"]["api"]["public"] == f"{SIM}/api/v3"
    assert exchange["key"] == exchange["secret"] == ""
    assert data["telegram"]["enabled"] is False
    assert "fiat_display_currency" not in data
    assert data["log_config"]["handlers"]["file"]["filename"] == str(files.log)
    assert data["log_config"]["root"]["handlers"] == ["file"]  # nothing duplicated to stderr
    # Freqtrade's own schema accepts it (its validator also fills in its defaults, hence the copy).
    validate_config_schema(copy.deepcopy(data))
    assert (config.port, config.bot_id, config.dry_run) == (18123, bot_id, True)
    # The API password is not in a repr or in the redacted copy meant for logs.
    assert creds.password not in repr(config) + repr(creds)
    assert creds.password not in json.dumps(config.redacted())


def test_live_keys_only_for_a_live_bot_and_only_when_sealed_to_this_gateway_for_it(tmp_path: Path) -> None:
    files = BotFiles(tmp_path, new_bot_id())
    gateway = identity_for("gw-files")
    keys = ExchangeCredentials(key=SecretStr("live-key-123"), secret=SecretStr("live-secret-456"))
    sealed = seal_credentials(gateway.sealing_public, "gw-files", uuid.UUID(files.bot_id), "cred-1:v1", keys)
    assert "live-key-123" not in sealed.model_dump_json()
    live = make_spec(exchange="binance", dry_run=False, credentials=sealed)
    with pytest.raises(BotConfigError, match="no identity to open"):
        render_config(live, files, port=18100, credentials=ApiCredentials.generate())
    for opener, refusal in (
        (identity_for("gw-other"), "sealed for gateway gw-files"),  # another gateway
        (GatewayIdentity("gw-files", gateway.signing, identity_for("gw-other").sealing), "does not open"),
    ):
        with pytest.raises(BotConfigError, match=refusal):
            render_config(live, files, port=18100, credentials=ApiCredentials.generate(), opener=opener)
    other_bot = BotFiles(tmp_path, new_bot_id())
    with pytest.raises(BotConfigError, match="not for gateway gw-files and bot"):
        render_config(live, other_bot, port=18100, credentials=ApiCredentials.generate(), opener=gateway)
    changed = live.model_copy(update={"credentials": sealed.model_copy(update={"revision": "cred-1:v2"})})
    with pytest.raises(BotConfigError, match="does not open"):
        render_config(changed, files, port=18100, credentials=ApiCredentials.generate(), opener=gateway)
    config = render_config(live, files, port=18100, credentials=ApiCredentials.generate(), opener=gateway)
    assert config.data["dry_run"] is False
    assert config.data["exchange"]["name"] == "binance"
    assert (config.data["exchange"]["key"], config.data["exchange"]["secret"]) == ("live-key-123", "live-secret-456")
    assert "ccxt_config" not in config.data["exchange"]
    redacted = json.dumps(config.redacted())
    assert "live-key-123" not in redacted
    assert "live-secret-456" not in redacted
    validate_config_schema(copy.deepcopy(config.data))

    dry = make_spec(exchange="binance", dry_run=True, credentials=sealed)
    config = render_config(dry, files, port=18100, credentials=ApiCredentials.generate())
    assert (config.data["exchange"]["key"], config.data["exchange"]["secret"]) == ("", "")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"strategy_class": "Missing"}, "does not define class Missing at its top level (classes: AlwaysEnter)"),
        ({"strategy_source": "class AlwaysEnter(:\n"}, "the strategy source does not parse: line 1"),
        ({"timeframe": "2m"}, "the exchange simulator has no timeframe '2m'"),
        ({"pairs": ["BTC/USDT", "ETH/BTC"]}, "pairs not quoted in the stake currency USDT: ETH/BTC"),
        ({"pairs": ["BTC/USDT", "BTC/USDT"]}, "pairs listed twice: BTC/USDT"),
        ({"stake_amount": Decimal(0)}, "stake_amount must be positive"),
        (
            {
                "dry_run": False,
                "credentials": seal_credentials(
                    identity_for("gw-files").sealing_public,
                    "gw-files",
                    uuid.uuid4(),
                    "r",
                    ExchangeCredentials(key=SecretStr("k"), secret=SecretStr("s")),
                ),
            },
            "a live bot can't trade on the exchange simulator",
        ),
        ({"exchange": "Not An Exchange"}, "not a ccxt exchange id"),
    ],
)
def test_a_spec_that_cannot_run_is_refused_with_a_reason(
    tmp_path: Path, overrides: dict[str, Any], reason: str
) -> None:
    files = BotFiles(tmp_path, new_bot_id())
    with pytest.raises(BotConfigError, match=None) as caught:
        render_config(
            make_spec(**overrides), files, port=18100, credentials=ApiCredentials.generate(), simulator_url=SIM
        )
    assert reason in str(caught.value)
    assert not files.folder.exists()  # nothing written


def test_the_simulator_needs_its_url(tmp_path: Path) -> None:
    with pytest.raises(BotConfigError, match="simulator's URL"):
        render_config(make_spec(), BotFiles(tmp_path, "b1"), port=18100, credentials=ApiCredentials.generate())


def test_files_are_private_and_written_whole(tmp_path: Path) -> None:
    files = BotFiles(tmp_path / "bots", new_bot_id())
    spec = make_spec()
    config = render_config(spec, files, port=18100, credentials=ApiCredentials.generate(), simulator_url=SIM)
    (files.strategies).mkdir(parents=True)
    (files.strategies / "OldStrategy.py").write_text("raise SystemExit('stale strategy imported')\n")

    files.write(config, spec.strategy_source)

    assert json.loads(files.config.read_text()) == config.data
    assert files.strategy_file("AlwaysEnter").read_text() == spec.strategy_source
    assert sorted(p.name for p in files.strategies.iterdir()) == ["AlwaysEnter.py"]  # the stale one is gone
    assert _mode(files.config) == 0o600
    assert _mode(files.folder) == 0o700
    assert _mode(files.strategies) == 0o700
    assert files.user_data.is_dir()
    assert not [p for p in files.folder.rglob("*.tmp")]


def test_bot_ids_must_be_safe_folder_names(tmp_path: Path) -> None:
    for bad in ("../escape", "a/b", "", ".hidden", ".."):
        with pytest.raises(ValueError, match="not a usable bot id"):
            BotFiles(tmp_path, bad)
    assert BotFiles(Path("relative"), "ok").root.is_absolute()
