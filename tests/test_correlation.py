"""One HTTP request's correlation id through both services, as real processes writing JSON logs.

A start request with ``X-Request-ID``: the management server's log lines for it (access log, audit),
the START_BOT on the bus, the gateway's lines for handling it (command accepted, the bot spawned and
ready) and the BOT_STARTED it reports back all carry the same id.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from shared.bus.messages import decode
from shared.bus.streams import EVENTS_STREAM, commands_stream
from tests.e2e.conftest import Service
from tests.enrollment import enroll_with_the_cli
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, free_port, wait_for
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET
from trading_gateway.bots import BOTS_DIR
from trading_gateway.bots.adoption import find_orphans

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "admin@corr.example.com"
PASSWORD = "an admin password for the correlation test"


def json_lines(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                found.append(doc)
    return found


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Services:
    management: Service
    gateway: Service
    management_url: str
    gateway_id: str


@pytest.fixture
def services(database_url: str, redis_url: str, tmp_path: Path, simulator: SimulatorProcess) -> Iterator[Services]:
    """``freqfleet management`` and ``freqfleet gateway`` as processes writing JSON logs, and an admin."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    mport, gport, ports = free_port(), free_port(), random.randrange(20_000, 60_000, 100)
    gateway_id = f"gw-corr-{uuid.uuid4().hex[:6]}"
    env |= {
        "FREQFLEET_DATA_DIR": str(tmp_path / "data"),
        "FREQFLEET_DATABASE_URL": database_url,
        "FREQFLEET_REDIS_URL": redis_url,
        "FREQFLEET_MANAGEMENT_PORT": str(mport),
        "FREQFLEET_MANAGEMENT_URL": f"http://127.0.0.1:{mport}",
        "FREQFLEET_GATEWAY_PORT": str(gport),
        "FREQFLEET_GATEWAY_ID": gateway_id,
        "FREQFLEET_SIMULATOR_URL": simulator.url,
        "FREQFLEET_LOG_FORMAT": "json",
        "FREQFLEET_HEARTBEAT_INTERVAL": "1",
        "FREQFLEET_STATUS_INTERVAL": "1",
        "FREQFLEET_BOT_PROCESS_THROTTLE_SECS": "1",
        "FREQFLEET_BOT_PORT_RANGE_START": str(ports),
        "FREQFLEET_BOT_PORT_RANGE_END": str(ports + 9),
        "FREQFLEET_STOP_BOTS_ON_SHUTDOWN": "true",
        "PYTHONUNBUFFERED": "1",
    }
    admin = subprocess.run(
        [sys.executable, "-m", "freqfleet", "create-admin", "--email", ADMIN],
        env=env | {"FREQFLEET_ADMIN_PASSWORD": PASSWORD},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert admin.returncode == 0, admin.stdout + admin.stderr
    enroll_with_the_cli(env, ROOT)
    management = Service("management", env, tmp_path / "management.log")
    gateway = Service("gateway", env, tmp_path / "gateway.log")
    management_url, gateway_url = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{gport}"
    try:
        management.start()
        wait_for(lambda: ready(management_url), timeout=90, what="the management server")
        gateway.start()
        wait_for(lambda: ready(gateway_url), timeout=90, what="the gateway")
        yield Services(management, gateway, management_url, gateway_id)
    finally:
        gateway.stop()
        management.stop()
        for orphan in find_orphans(tmp_path / "data" / "gateway" / gateway_id / BOTS_DIR):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan.pid, signal.SIGKILL)


async def test_a_start_requests_id_is_in_both_services_logs_and_on_the_bus(services: Services, redis_url: str) -> None:
    management, gateway, gateway_id = services.management, services.gateway, services.gateway_id
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(base_url=services.management_url + "/api/v1", timeout=60) as api:
            token = (await api.post("/auth/token", data={"username": ADMIN, "password": PASSWORD})).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            strategy = await api.post(
                "/strategies", json={"name": "always", "source": ALWAYS_ENTER_MARKET}, headers=headers
            )
            body = {"name": "traced", "strategy_id": strategy.json()["id"], "pairs": ["BTC/USDT"], "timeframe": "1m"}
            bot_id = (await api.post("/bots", json=body, headers=headers)).json()["id"]

            async def heartbeat_applied() -> bool:
                """A heartbeat on the events stream, and the management server's group has taken and acked all."""
                entries = await redis.xrange(EVENTS_STREAM)
                if not any(fields[b"type"] == b"GATEWAY_HEARTBEAT" for _, fields in entries):
                    return False
                groups = await redis.xinfo_groups(EVENTS_STREAM)
                return any(g["name"] == b"management" and g["pending"] == 0 and g["lag"] == 0 for g in groups)

            await async_wait_for(heartbeat_applied, timeout=30, what="the management server to hear the gateway")
            request_id = f"corr-{uuid.uuid4().hex}"
            started = await api.post(f"/bots/{bot_id}/start", headers=headers | {"X-Request-ID": request_id})
            assert started.status_code == 200, started.text
            assert started.headers["x-request-id"] == request_id

            async def running() -> bool:
                bot = (await api.get(f"/bots/{bot_id}", headers=headers)).json()
                return bool(bot["actual_state"] == "running")

            await async_wait_for(running, timeout=90, interval=0.5, what="the bot running")

        # The bus: the command, and the gateway's report of what it caused.
        [command] = [decode(f[b"envelope"]) for _, f in await redis.xrange(commands_stream(gateway_id))]
        assert (command.type, command.correlation_id) == ("START_BOT", request_id)
        reports = [decode(f[b"envelope"]) for _, f in await redis.xrange(EVENTS_STREAM)]
        assert {e.type for e in reports if e.correlation_id == request_id} >= {"COMMAND_ACCEPTED", "BOT_STARTED"}

        # The logs: JSON lines of each service carrying the id.
        def traced(service: Service, events: set[str]) -> list[dict[str, Any]] | None:
            lines = [d for d in json_lines(service.log) if d.get("correlation_id") == request_id]
            return lines if events <= {d.get("event") for d in lines} else None

        mine = wait_for(lambda: traced(management, {"request", "audit"}), timeout=10, what="management's lines")
        access = next(d for d in mine if d["event"] == "request")
        assert (access["method"], access["path"], access["status"]) == ("POST", f"/api/v1/bots/{bot_id}/start", 200)
        assert next(d for d in mine if d["event"] == "audit")["action"] == "bot.start"
        assert {d["service"] for d in mine} == {"management"}
        theirs = wait_for(
            lambda: traced(gateway, {"command accepted", "bot forked", "bot ready"}),  # FREQFLEET_BOT_LAUNCHER=fork
            timeout=10,
            what="gateway's lines",
        )
        assert {d["service"] for d in theirs} == {"gateway"}
        accepted = next(d for d in theirs if d["event"] == "command accepted")
        assert (accepted["command_type"], accepted["bot_id"]) == ("START_BOT", bot_id)
        assert all(d["bot_id"] == bot_id for d in theirs if d["event"] in ("bot forked", "bot ready"))
    finally:
        await redis.aclose()
