"""``freqfleet simulator`` as a real process: its settings, and the same prices across restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from exchange_simulator.app import create_app
from tests.exchange_simulator.conftest import (
    PAIRS,
    SEED,
    simulator_settings,
    start_simulator_process,
    stop_simulator_process,
)
from tests.helpers import serve

# A closed, fixed range: 2026-01-05 00:00 UTC, 500 candles of 15 minutes.
HISTORY = {"symbol": "SOLUSDT", "interval": "15m", "startTime": 1_767_571_200_000, "limit": 500}


def _history(url: str) -> list[list[Any]]:
    rows: list[list[Any]] = httpx.get(f"{url}/api/v3/klines", params=HISTORY, timeout=10).json()
    return rows


def test_same_seed_same_prices_across_restarts(tmp_path: Path) -> None:
    first = start_simulator_process(tmp_path / "first.log")
    try:
        health = httpx.get(f"{first.url}/_sim/health", timeout=5).json()
        assert health["seed"] == SEED
        assert health["pairs"] == PAIRS
        before = _history(first.url)
    finally:
        stop_simulator_process(first)
    assert "exchange simulator stopped" in first.output()  # SIGTERM: a graceful shutdown
    assert len(before) == 500

    second = start_simulator_process(tmp_path / "second.log")
    try:
        assert _history(second.url) == before
    finally:
        stop_simulator_process(second)

    other = start_simulator_process(tmp_path / "other.log", seed=SEED + 1, pairs=["SOL/USDT"])
    try:
        other_history = _history(other.url)
        assert [r[0] for r in other_history] == [r[0] for r in before]
        assert [r[4] for r in other_history] != [r[4] for r in before]  # another seed, other prices
        assert httpx.get(f"{other.url}/api/v3/depth", params={"symbol": "BTCUSDT"}).json()["code"] == -1121
    finally:
        stop_simulator_process(other)


async def test_a_process_and_an_in_process_app_agree(tmp_path: Path) -> None:
    """Prices depend on nothing but (seed, pair, time): not on the process (``hash()`` is salted)."""
    sim = start_simulator_process(tmp_path / "simulator.log")
    try:
        from_process = _history(sim.url)
    finally:
        stop_simulator_process(sim)
    async with serve(create_app(simulator_settings())) as url, httpx.AsyncClient(base_url=url) as client:
        in_process = (await client.get("/api/v3/klines", params=HISTORY)).json()
    assert in_process == from_process


def test_bad_settings_are_refused_with_a_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_")}
    env["FREQFLEET_SIMULATOR_PAIRS"] = "BTC/USDT,BTCUSDT"
    result = subprocess.run(
        [sys.executable, "-m", "freqfleet", "simulator"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr
    assert "BTCUSDT" in result.stderr
