"""The simulator for its tests: in-process (real uvicorn on a free port) or as ``freqfleet simulator``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from exchange_simulator.app import create_app
from exchange_simulator.config import SimulatorSettings
from shared.settings import Environment
from tests.helpers import free_port, serve, wait_for

SEED = 1234
PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT"]


def simulator_settings(seed: int = SEED, pairs: list[str] | None = None) -> SimulatorSettings:
    return SimulatorSettings(env=Environment.test, simulator_seed=seed, simulator_pairs=pairs or PAIRS)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def sim_url() -> AsyncIterator[str]:
    """One in-process simulator per test module; tests reset it with ``reset_sim``."""
    async with serve(create_app(simulator_settings())) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's simulator, reset (overlays, faults, statistics) before and after the test."""
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as client:
        (await client.post("/_sim/reset")).raise_for_status()
        yield client
        (await client.post("/_sim/reset")).raise_for_status()


@dataclass
class SimulatorProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_sim/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_simulator_process(log: Path, seed: int = SEED, pairs: list[str] | None = None) -> SimulatorProcess:
    """``freqfleet simulator`` as a real process, in its own session, on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_")}
    env |= {
        "FREQFLEET_SIMULATOR_PORT": str(port),
        "FREQFLEET_SIMULATOR_SEED": str(seed),
        "FREQFLEET_SIMULATOR_PAIRS": ",".join(pairs or PAIRS),
        "FREQFLEET_LOG_FORMAT": "console",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "freqfleet", "simulator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sim = SimulatorProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_for(lambda: proc.poll() is None and _answers(sim.url), timeout=30, what="the simulator to answer")
    except AssertionError:
        stop_simulator_process(sim)
        raise AssertionError(f"freqfleet simulator did not start:\n{sim.output()[-3000:]}") from None
    return sim


def stop_simulator_process(sim: SimulatorProcess) -> int:
    """SIGTERM its process group, SIGKILL if it lingers; the exit code."""
    try:
        os.killpg(sim.proc.pid, signal.SIGTERM)
        return sim.proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(sim.proc.pid, signal.SIGKILL)
        return sim.proc.wait(5)
    except ProcessLookupError:
        return sim.proc.wait(5)


@pytest.fixture(scope="module")
def sim_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    """One ``freqfleet simulator`` process per test module."""
    sim = start_simulator_process(tmp_path_factory.mktemp("simulator") / "simulator.log")
    try:
        yield sim
    finally:
        stop_simulator_process(sim)
