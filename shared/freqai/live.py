"""What a gateway and a running bot that receives models tell each other, through two files.

A receiving bot runs the ``freqai`` section :func:`live_freqai_section` renders (identifier
:data:`LIVE_IDENTIFIER`, never retrain) and a Freqfleet model class (:mod:`shared.freqai.hotswap`). Its
model folder is ``<user_data>/models/freqfleet/`` (:func:`models_folder`), which holds:

- ``pair_dictionary.json``: Freqtrade's own index of the models, per pair ``model_filename``,
  ``trained_timestamp`` and an **absolute** ``data_path``: what Freqtrade reads when it starts;
- ``freqfleet-model.json`` (:class:`InstallMarker`), written by the gateway *after* it: the installed
  version (model id, version, sha256, a fresh ``install_id``) and the same per-pair entries. A running bot
  watches it and swaps the new model in (it never needs ``pair_dictionary.json`` for that, so the two
  files can't be read half-updated);
- ``freqfleet-ack.json`` (:class:`Ack`), written by the bot once every pair of an install has predicted
  with the new model (or once loading it failed): the gateway sends MODEL_LOADED only then.

The model files are the bot's own copies of verified bundles, in ``installed/<sha256>/`` below this folder
(the gateway copies them from its store): ``data_path`` points there, so a sandboxed bot reads nothing
outside its own folder.

This module uses only pydantic and the standard library: the gateway and the bots both import it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.files import atomic_write

LIVE_IDENTIFIER = "freqfleet"
MARKER_FILE = "freqfleet-model.json"
ACK_FILE = "freqfleet-ack.json"
PAIR_DICTIONARY = "pair_dictionary.json"
NEVER_RETRAIN_HOURS = 24 * 365 * 100  # a receiving bot never trains (and its model never counts as due)
MAX_FILE_BYTES = 4 * 1024 * 1024

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PairInstall(_Strict):
    """One pair's model as Freqtrade's ``pair_dictionary.json`` names it (``data_path`` absolute)."""

    model_filename: str = Field(pattern=r"^cb_[a-z0-9]{1,20}_\d{9,11}$")
    trained_timestamp: int = Field(ge=0)
    data_path: str = Field(min_length=1, max_length=4096)


class InstallMarker(_Strict):
    """The version the gateway installed for a bot; a new ``install_id`` for every install (rollbacks too)."""

    install_id: uuid.UUID
    model_id: uuid.UUID
    version: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    freqai_model: str
    pairs: dict[str, PairInstall]
    installed_at: AwareDatetime


class LoadedModel(_Strict):
    """An install a bot predicts with: for each pair, the candle its first prediction was made on."""

    install_id: uuid.UUID
    model_id: uuid.UUID
    version: int
    sha256: str
    pairs: dict[str, AwareDatetime]
    loaded_at: AwareDatetime
    seconds: float = Field(ge=0, description="From the bot noticing the install to every pair predicting with it.")


class FailedInstall(_Strict):
    """An install the bot could not use; it kept predicting with the model it had."""

    install_id: uuid.UUID
    model_id: uuid.UUID
    sha256: str
    error: str = Field(max_length=2000)
    failed_at: AwareDatetime


class Ack(_Strict):
    """What the bot process ``pid`` predicts with, and the last install it refused."""

    pid: int = Field(ge=1)
    loaded: LoadedModel | None = None
    failed: FailedInstall | None = None
    updated_at: AwareDatetime


def models_folder(user_data: Path) -> Path:
    """The receiving bot's FreqAI model folder (``<user_data>/models/freqfleet``)."""
    return user_data / "models" / LIVE_IDENTIFIER


MODEL_KEYS = (
    "feature_parameters",
    "data_split_parameters",
    "model_training_parameters",
    "train_period_days",
    "conv_width",
)
"""Keys of the ``freqai`` section that describe a model's features: a receiving bot takes them from the model."""


@dataclass(frozen=True)
class ModelRuntime:
    """What a bot's config needs of its installed model: the FreqAI model class and its training ``freqai``."""

    freqai_model: str
    freqai: Mapping[str, Any]


def live_freqai_section(
    bot: Mapping[str, Any] | None, model: Mapping[str, Any] | None, *, timeframe: str
) -> dict[str, Any]:
    """The ``freqai`` section of a bot that receives models.

    :param bot: the bot's own ``freqai`` section (its spec), if any.
    :param model: the ``freqai`` section the installed model was trained with: its feature keys
        (:data:`MODEL_KEYS`) replace the bot's, so the bot computes exactly the features the model expects.
    :param timeframe: the bot's timeframe (the default feature timeframe of a bot that has no model yet).

    What Freqtrade requires and neither gives gets a small default (a bot without a model only waits for
    one). Then what makes it a receiving bot: the identifier is fixed (the gateway installs into that folder);
    retraining is pushed a century away (the Freqfleet model class never trains anyway); old models are never
    purged (the gateway owns the files); no TensorBoard, continual learning or metrics files.
    """
    section: dict[str, Any] = json.loads(json.dumps(dict(bot or {})))  # a deep copy of plain JSON data
    for key in MODEL_KEYS:
        if model is not None and key in model:
            section[key] = json.loads(json.dumps(model[key]))
    section.setdefault("train_period_days", 3)
    section.setdefault("backtest_period_days", 1)
    section.setdefault("data_split_parameters", {})
    features = section.setdefault("feature_parameters", {})
    features.setdefault("include_timeframes", [timeframe])
    features.setdefault("include_corr_pairlist", [])
    features.setdefault("indicator_periods_candles", [10, 20])
    features.setdefault("label_period_candles", 12)
    section.update(
        {
            "enabled": True,
            "identifier": LIVE_IDENTIFIER,
            "live_retrain_hours": NEVER_RETRAIN_HOURS,
            "purge_old_models": 0,
            "continual_learning": False,
            "activate_tensorboard": False,
            "write_metrics_to_disk": False,
            "save_backtest_models": False,
        }
    )
    return section


def write_model(path: Path, model: BaseModel) -> None:
    atomic_write(path, model.model_dump_json().encode())


def read_model(path: Path, cls: type[M]) -> M | None:
    """The file parsed as ``cls``; None when it is missing, too large or not valid (it is then ignored)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        return cls.model_validate_json(data)
    except ValidationError:
        return None


def utcnow() -> datetime:
    return datetime.now(UTC)
