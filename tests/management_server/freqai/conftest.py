"""A real FreqAI model (trained once per session on the exchange simulator), a real worker, and helpers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from management_server.freqai.service import EXAMPLE_CLASS, EXAMPLE_STRATEGY
from management_server.users.models import Role
from shared.bus.streams import commands_stream
from shared.freqai.bundle import PackedBundle
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.freqai_models import trained_models
from tests.management_server.conftest import Management, bearer

PAIRS = ["BTC/USDT", "ETH/USDT"]
EXAMPLE_SOURCE = EXAMPLE_STRATEGY.read_text()


@dataclass(frozen=True)
class Trained:
    """A packed bundle of a real training: ``path`` holds the compressed bytes."""

    path: Path
    packed: PackedBundle


@pytest.fixture(scope="package")
def trained(simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Model A of ``tests/freqai_models.py``: FreqaiExample on BTC/USDT and ETH/USDT, two days of 5m candles,
    trained once per session (by whichever package needs it first)."""
    model = trained_models(tmp_path_factory, simulator.url).a
    return Trained(model.packed.path, model.packed)


async def sign_in(management: Management, email: str, role: Role = Role.user) -> dict[str, str]:
    await management.create_user(email, role=role)
    return bearer((await management.login(email))["access_token"])


async def upload_strategy(management: Management, headers: dict[str, str], name: str = "freqai-example") -> Any:
    response = await management.client.post(
        "/api/v1/strategies", json={"name": name, "source": EXAMPLE_SOURCE}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def upload_bundle(
    management: Management,
    headers: dict[str, str],
    content: bytes,
    *,
    name: str | None = "example",
    strategy_class: str | None = EXAMPLE_CLASS,
) -> Any:
    data = {k: v for k, v in (("name", name), ("strategy_class", strategy_class)) if v is not None}
    return await management.client.post(
        "/api/v1/models/upload", files={"file": ("bundle.tar.zst", content)}, data=data, headers=headers
    )


async def commands(redis: aioredis.Redis, gateway_id: str) -> list[dict[str, Any]]:
    entries = await redis.xrange(commands_stream(gateway_id))
    return [json.loads(fields[b"envelope"]) for _, fields in entries]


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]


@pytest.fixture
def worker(management: Management, simulator: SimulatorProcess, tmp_path: Path) -> Iterator[Worker]:
    """``freqfleet worker`` on the test's database, Redis and data folder (so it shares the master keys and the
    model store with the management server), training against the package's simulator."""
    settings = management.settings
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env |= {
        "FREQFLEET_ENV": "test",
        "FREQFLEET_DATABASE_URL": settings.database_url.get_secret_value(),
        "FREQFLEET_REDIS_URL": settings.redis_url.get_secret_value(),
        "FREQFLEET_SIMULATOR_URL": simulator.url,
        "FREQFLEET_DATA_DIR": str(settings.data_dir),
        "FREQFLEET_CELERY_CONCURRENCY": "1",
        "FREQFLEET_LOG_FORMAT": "console",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "freqfleet", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Worker(proc, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # pool processes that outlived their parent
