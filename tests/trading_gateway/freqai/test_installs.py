"""A receiving bot's config and model files, without running Freqtrade."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from shared.freqai.bundle import read_manifest
from shared.freqai.catalog import FREQAIMODELS_DIR
from shared.freqai.live import (
    MARKER_FILE,
    NEVER_RETRAIN_HOURS,
    InstallMarker,
    ModelRuntime,
    models_folder,
    read_model,
)
from tests.freqai_models import fake_model_dir, pack_fake
from tests.trading_gateway.bots.conftest import make_spec
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles, render_config
from trading_gateway.freqai import installs
from trading_gateway.freqai.store import StoredBundle


def render(tmp_path: Path, freqai: dict[str, object] | None, model: ModelRuntime | None) -> dict[str, object]:
    spec = make_spec(freqai=freqai, timeframe="5m")
    config = render_config(
        spec,
        BotFiles(tmp_path / "bots", "bot-1"),
        port=20_000,
        credentials=ApiCredentials.generate(),
        simulator_url="http://127.0.0.1:8002",
        freqai_model=model,
    )
    return config.data


def test_a_freqai_bot_runs_the_freqfleet_class_and_never_trains(tmp_path: Path) -> None:
    data = render(tmp_path, {"identifier": "mine", "live_retrain_hours": 1, "expiration_hours": 6}, None)
    assert data["freqaimodel"] == "FreqfleetLightGBMRegressor"
    assert data["freqaimodel_path"] == str(FREQAIMODELS_DIR)
    section = data["freqai"]
    assert isinstance(section, dict)
    assert section["identifier"] == "freqfleet"
    assert section["live_retrain_hours"] == NEVER_RETRAIN_HOURS
    assert section["purge_old_models"] == 0
    assert section["expiration_hours"] == 6  # the bot's own live setting is kept
    for key in ("train_period_days", "backtest_period_days", "data_split_parameters"):
        assert key in section  # what Freqtrade's schema requires
    assert section["feature_parameters"]["include_timeframes"] == ["5m"]
    assert "freqai" not in render(tmp_path, None, None)


def test_the_installed_model_decides_class_and_features(tmp_path: Path) -> None:
    model = ModelRuntime(
        freqai_model="XGBoostRegressor",
        freqai={
            "identifier": "freqfleet-train",
            "train_period_days": 7,
            "expiration_hours": 0,
            "feature_parameters": {
                "include_timeframes": ["5m", "1h"],
                "include_corr_pairlist": [],
                "DI_threshold": 0.5,
            },
        },
    )
    data = render(tmp_path, {"expiration_hours": 6, "feature_parameters": {"DI_threshold": 0.1}}, model)
    assert data["freqaimodel"] == "FreqfleetXGBoostRegressor"
    section = data["freqai"]
    assert isinstance(section, dict)
    assert section["feature_parameters"]["DI_threshold"] == 0.5
    assert section["feature_parameters"]["include_timeframes"] == ["5m", "1h"]
    assert section["train_period_days"] == 7
    assert section["expiration_hours"] == 6
    assert section["identifier"] == "freqfleet"
    assert "freqai" in render(tmp_path, None, model)  # a model makes it a FreqAI bot


def test_an_install_copies_the_bundle_into_the_bot_and_is_recorded(tmp_path: Path) -> None:
    packed = pack_fake(fake_model_dir(tmp_path), tmp_path / "b.tar.zst")
    folder = tmp_path / "store" / packed.sha256
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_bytes(
        json.dumps(packed.manifest.model_dump(mode="json")).encode()
    )  # what the store keeps besides the files
    stored = StoredBundle(sha256=packed.sha256, folder=folder, manifest=read_manifest(folder))
    files = BotFiles(tmp_path / "bots", "bot-1")
    first = installs.new_record(stored, model_id=uuid.uuid4(), version=1, reason="start")
    installs.write_install(files, stored, first)
    dictionary = json.loads((models_folder(files.user_data) / "pair_dictionary.json").read_text())
    # The bot's own copy (a sandboxed bot reads only its own folder), not the store's.
    copy = models_folder(files.user_data) / installs.INSTALLED_DIR / packed.sha256
    assert dictionary["BTC/USDT"]["data_path"] == str(copy / "sub-train-BTC_1767484800")
    assert Path(dictionary["BTC/USDT"]["data_path"]).is_absolute()
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == sorted(
        p.relative_to(folder) for p in folder.rglob("*")
    )
    marker = read_model(models_folder(files.user_data) / MARKER_FILE, InstallMarker)
    assert marker is not None
    assert marker.install_id == first.install_id
    assert marker.pairs["ETH/USDT"].model_filename == "cb_eth_1767484800"

    state = installs.BotModels(history=[first])
    first.status = "loaded"
    second = installs.new_record(stored, model_id=uuid.uuid4(), version=2, reason="update")
    second.status = "failed"
    third = installs.new_record(stored, model_id=first.model_id, version=1, reason="restore")
    state.history += [second, third]
    installs.save(files, state)
    stale = copy.parent / ("0" * 64)
    stale.mkdir()
    assert installs.prune_copies(files, state) == [stale.name]  # not in the history: its copy goes
    assert copy.is_dir()
    again = installs.load(files)
    assert again.current == third
    assert again.loaded_before(third) == first
    assert again.recent_versions(5) == [packed.sha256]
    installs.clear_install(files)
    assert not (models_folder(files.user_data) / MARKER_FILE).exists()
    assert json.loads((models_folder(files.user_data) / "pair_dictionary.json").read_text()) == {}
