"""Training through the real management server and a real ``freqfleet worker``: Freqtrade trains on the exchange
simulator's candles, the bundle lands encrypted in the model store and is registered on the version.

A worker process killed in the middle of a training (SIGKILL, as the kernel's OOM killer would) hands the task
back to the queue; the training runs again and the version is registered once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from management_server.freqai.tasks import TRAINING_WORKDIR
from management_server.users.models import Role
from tests.helpers import async_wait_for, wait_for
from tests.management_server.conftest import Management
from tests.management_server.freqai.conftest import EXAMPLE_SOURCE, PAIRS, Worker, sign_in

pytestmark = pytest.mark.slow

TRAINING = {"pairs": PAIRS, "timeframe": "5m", "days": 2, "freqai": {"model_training_parameters": {"n_estimators": 30}}}
RAISES_IN_TARGETS = EXAMPLE_SOURCE.replace("class FreqaiExample(", "class RaisesInTargets(").replace(
    '        label_period = self.freqai_info["feature_parameters"]["label_period_candles"]\n',
    '        raise ValueError("no targets today 42")\n',
)


async def watch(
    management: Management, headers: dict[str, str], model_id: str, worker: Worker, timeout: float = 420
) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """The version once its training ended, and the (status, progress) pairs seen on the way."""
    seen: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        response = await management.client.get(f"/api/v1/models/{model_id}", headers=headers)
        assert response.status_code == 200, response.text
        model = response.json()
        if not seen or seen[-1] != (model["status"], model["progress"]):
            seen.append((model["status"], model["progress"]))
        if model["status"] in ("succeeded", "failed"):
            return model, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"training not done after {timeout}s: {seen}\n--- worker ---\n{worker.output()}")
        await asyncio.sleep(0.5)


def freqtrade_of(workdir: Path) -> psutil.Process | None:
    """The ``freqtrade backtesting`` (the training) running in ``workdir``."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "backtesting" in cmdline and any(str(workdir) in part for part in cmdline):
            return proc
    return None


async def test_a_worker_killed_mid_training_trains_again_and_registers_one_version(
    management: Management, worker: Worker
) -> None:
    alice = await sign_in(management, "alice@example.com")
    queued = await management.client.post("/api/v1/models/train", json=TRAINING, headers=alice)
    assert queued.status_code == 202, queued.text
    model_id = queued.json()["id"]
    workdir = management.settings.data_dir / TRAINING_WORKDIR / model_id

    # Kill the pool process that runs the training once Freqtrade trains (after the candle download).
    training = await asyncio.to_thread(
        wait_for, lambda: freqtrade_of(workdir), timeout=240, interval=0.2, what="freqtrade training"
    )
    pool_process = training.parent()
    assert pool_process is not None
    assert "celery" in " ".join(pool_process.cmdline()) or "freqfleet" in " ".join(pool_process.cmdline())
    shown = (await management.client.get(f"/api/v1/models/{model_id}", headers=alice)).json()
    assert (shown["status"], shown["attempts"]) == ("running", 1)
    assert shown["progress"]["step"] in ("download", "train")
    os.kill(pool_process.pid, signal.SIGKILL)

    model, seen = await watch(management, alice, model_id, worker)
    assert model["status"] == "succeeded", (model, worker.output())
    assert model["attempts"] == 2  # the task came back once, and ran again from the start
    assert not training.is_running()  # what the lost attempt left running was stopped
    assert any(status == "running" and progress["step"] == "train" for status, progress in seen), seen
    assert model["progress"]["step"] == "done"
    assert len(model["sha256"]) == 64
    assert model["size"] > model["compressed_size"] > 0
    assert model["pairs"] == PAIRS
    assert set(model["features"]) == set(PAIRS)
    assert set(model["metrics"]) == set(PAIRS)
    assert model["library_versions"]["freqtrade"]
    assert model["finished_at"] >= model["started_at"]

    # One version, one bundle: the model store holds exactly this one, encrypted; the work folder is gone.
    listed = (await management.client.get("/api/v1/models", headers=alice)).json()
    assert [(m["id"], m["version"], m["status"]) for m in listed] == [(model_id, 1, "succeeded")]
    store = management.app.state.model_registry.store
    assert [p.name for p in store.root.glob("*.bundle")] == [f"{model_id}.bundle"]
    assert len(b"".join(store.segments(uuid.UUID(model_id)))) == model["compressed_size"]
    assert not workdir.exists()
    assert "WorkerLostError" in worker.output() or "exited prematurely" in worker.output()


async def test_a_training_that_fails_says_why_with_the_log_tail(management: Management, worker: Worker) -> None:
    admin = await sign_in(management, "root@example.com", Role.admin)
    strategy = await management.client.post(
        "/api/v1/strategies", json={"name": "raises", "source": RAISES_IN_TARGETS}, headers=admin
    )
    assert strategy.status_code == 201, strategy.text
    body = TRAINING | {"strategy_id": strategy.json()["id"], "pairs": ["BTC/USDT"]}
    queued = await management.client.post("/api/v1/models/train", json=body, headers=admin)
    assert queued.status_code == 202, queued.text
    model, _ = await watch(management, admin, queued.json()["id"], worker)
    assert model["status"] == "failed", model
    assert model["name"] == "RaisesInTargets"
    assert model["error"].startswith("the training failed")
    assert any("no targets today 42" in line for line in model["log_tail"])
    assert model["sha256"] is None
    assert str(management.settings.data_dir) not in "\n".join(model["log_tail"])  # no server paths
    await async_wait_for(lambda: _no_workdir(management, model["id"]), timeout=10, what="the work folder removed")


async def _no_workdir(management: Management, model_id: str) -> bool:
    return not (management.settings.data_dir / TRAINING_WORKDIR / model_id).exists()
