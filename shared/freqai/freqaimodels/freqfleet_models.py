"""The Freqfleet FreqAI model classes: Freqtrade's LightGBM and XGBoost models with ``FreqfleetModelMixin``.

Freqtrade loads them by name from this folder (``--freqaimodel FreqfleetLightGBMRegressor`` with
``freqaimodel_path`` set to it, see :data:`shared.freqai.catalog.FREQAIMODELS_DIR`). Freqtrade imports every
``.py`` file of the folder and keeps only classes defined in it, so each class is written out here. The
list matches :data:`shared.freqai.catalog.ALLOWED_MODELS` (a test checks it).
"""

from freqtrade.freqai.prediction_models.LightGBMClassifier import LightGBMClassifier  # type: ignore[import-untyped]
from freqtrade.freqai.prediction_models.LightGBMClassifierMultiTarget import (  # type: ignore[import-untyped]
    LightGBMClassifierMultiTarget,
)
from freqtrade.freqai.prediction_models.LightGBMRegressor import LightGBMRegressor  # type: ignore[import-untyped]
from freqtrade.freqai.prediction_models.LightGBMRegressorMultiTarget import (  # type: ignore[import-untyped]
    LightGBMRegressorMultiTarget,
)
from freqtrade.freqai.prediction_models.XGBoostClassifier import XGBoostClassifier  # type: ignore[import-untyped]
from freqtrade.freqai.prediction_models.XGBoostRegressor import XGBoostRegressor  # type: ignore[import-untyped]
from freqtrade.freqai.prediction_models.XGBoostRegressorMultiTarget import (  # type: ignore[import-untyped]
    XGBoostRegressorMultiTarget,
)
from freqtrade.freqai.prediction_models.XGBoostRFClassifier import XGBoostRFClassifier  # type: ignore[import-untyped]
from freqtrade.freqai.prediction_models.XGBoostRFRegressor import XGBoostRFRegressor  # type: ignore[import-untyped]

from shared.freqai.hotswap import FreqfleetModelMixin


class FreqfleetLightGBMRegressor(FreqfleetModelMixin, LightGBMRegressor):  # type: ignore[misc]
    pass


class FreqfleetLightGBMRegressorMultiTarget(FreqfleetModelMixin, LightGBMRegressorMultiTarget):  # type: ignore[misc]
    pass


class FreqfleetLightGBMClassifier(FreqfleetModelMixin, LightGBMClassifier):  # type: ignore[misc]
    pass


class FreqfleetLightGBMClassifierMultiTarget(FreqfleetModelMixin, LightGBMClassifierMultiTarget):  # type: ignore[misc]
    pass


class FreqfleetXGBoostRegressor(FreqfleetModelMixin, XGBoostRegressor):  # type: ignore[misc]
    pass


class FreqfleetXGBoostRegressorMultiTarget(FreqfleetModelMixin, XGBoostRegressorMultiTarget):  # type: ignore[misc]
    pass


class FreqfleetXGBoostRFRegressor(FreqfleetModelMixin, XGBoostRFRegressor):  # type: ignore[misc]
    pass


class FreqfleetXGBoostClassifier(FreqfleetModelMixin, XGBoostClassifier):  # type: ignore[misc]
    pass


class FreqfleetXGBoostRFClassifier(FreqfleetModelMixin, XGBoostRFClassifier):  # type: ignore[misc]
    pass
