"""The FreqAI model classes Freqfleet trains and runs.

Only Freqtrade's own LightGBM and XGBoost models are allowed: they are what the bots' environment has
(no PyTorch, no reinforcement learning), and a name from this list is the only thing of a training
request that reaches ``--freqaimodel``. Each has a Freqfleet variant of the same behaviour (see
:mod:`shared.freqai.hotswap`) named ``Freqfleet<Name>``: in backtesting (training) it also records
test-set metrics, live it never trains and swaps in models the gateway installs.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "LightGBMRegressor"
ALLOWED_MODELS: tuple[str, ...] = (
    "LightGBMRegressor",
    "LightGBMRegressorMultiTarget",
    "LightGBMClassifier",
    "LightGBMClassifierMultiTarget",
    "XGBoostRegressor",
    "XGBoostRegressorMultiTarget",
    "XGBoostRFRegressor",
    "XGBoostClassifier",
    "XGBoostRFClassifier",
)
CLASS_PREFIX = "Freqfleet"
FREQAIMODELS_DIR = Path(__file__).resolve().parent / "freqaimodels"
"""The folder to give Freqtrade as ``freqaimodel_path``: it holds only the Freqfleet variants."""


class UnknownModel(ValueError):
    """A FreqAI model name that is not in :data:`ALLOWED_MODELS`."""


def check_model(name: str) -> str:
    """``name`` if it is an allowed FreqAI model, else :class:`UnknownModel` naming the allowed ones."""
    if name not in ALLOWED_MODELS:
        raise UnknownModel(f"unknown FreqAI model {name!r}; allowed: {', '.join(ALLOWED_MODELS)}")
    return name


def freqfleet_class(name: str) -> str:
    """The class a bot or a training run loads with ``--freqaimodel`` for the FreqAI model ``name``."""
    return CLASS_PREFIX + check_model(name)
