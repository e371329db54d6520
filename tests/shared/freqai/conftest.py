"""The FreqAI engine's tests: the models trained once per session (on the worker's simulator)."""

from __future__ import annotations

import pytest

from tests.exchange_simulator.conftest import SimulatorProcess
from tests.freqai_models import TrainedModels, trained_models


@pytest.fixture(scope="package")
def models(tmp_path_factory: pytest.TempPathFactory, simulator: SimulatorProcess) -> TrainedModels:
    return trained_models(tmp_path_factory, simulator.url).both()
