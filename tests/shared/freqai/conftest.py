"""One exchange simulator process for the FreqAI engine's tests; the models trained once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.exchange_simulator.conftest import SimulatorProcess, start_simulator_process, stop_simulator_process
from tests.freqai_models import TrainedModels, trained_models


@pytest.fixture(scope="package")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    sim = start_simulator_process(tmp_path_factory.mktemp("simulator") / "simulator.log")
    try:
        yield sim
    finally:
        stop_simulator_process(sim)


@pytest.fixture(scope="package")
def models(tmp_path_factory: pytest.TempPathFactory, simulator: SimulatorProcess) -> TrainedModels:
    return trained_models(tmp_path_factory.getbasetemp() / "freqai-models", simulator.url)
