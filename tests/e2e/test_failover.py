"""A host lost: a second gateway (leases on, 6 s) runs two bots, each in an open trade with its trades in PostgreSQL;
its process and its bots are killed with SIGKILL. Its leases end, and the management server starts each bot on the
live gateway, at the next generation, with the same open trade (same id, same open rate), says so in the audit log,
and ends whatever the old holder still had open in the bot's database (a new password for its role)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from freqfleet.embedded import restricted_user
from tests.e2e.conftest import Service, Stack, bearer, get_bot, wait_bot, wait_status
from tests.e2e.test_bots import approved_bot
from tests.enrollment import enroll_gateway
from tests.helpers import async_wait_for, free_port
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.redis_acl import acl_rules, acl_user

pytestmark = pytest.mark.slow

LEASE_SECONDS = 6


async def _second_gateway(stack: Stack, tmp_path: Path) -> tuple[Service, str, Path]:
    """A gateway of its own folder, ports, uids and Valkey user, enrolled, with leases and room for more bots than
    the stack's (placement takes the one with the most free capacity first); running and heard of."""
    gateway_id = f"gw-lost-{uuid.uuid4().hex[:6]}"
    data_dir = tmp_path / "lost-host"
    await enroll_gateway(stack.database_url, gateway_id, data_dir / "gateway" / gateway_id)
    ports = random.randrange(20_000, 60_000, 100)
    env = stack.services["gateway"].env | {
        "FREQFLEET_DATA_DIR": str(data_dir),
        "FREQFLEET_GATEWAY_ID": gateway_id,
        "FREQFLEET_GATEWAY_PORT": str(free_port()),
        "FREQFLEET_REDIS_URL": restricted_user(stack.redis_url, acl_user(gateway_id), acl_rules(gateway_id)),
        "FREQFLEET_MAX_BOTS": "100",
        "FREQFLEET_LEASE_SECONDS": str(LEASE_SECONDS),
        "FREQFLEET_BOT_PORT_RANGE_START": str(ports),
        "FREQFLEET_BOT_PORT_RANGE_END": str(ports + 29),
        "FREQFLEET_SANDBOX_UID_BASE": str(int(os.environ.get("FREQFLEET_SANDBOX_UID_BASE", "610000")) + 50_000),
    }
    service = Service("gateway", env, stack.logs / f"{gateway_id}.log")
    service.start()
    return service, gateway_id, data_dir / "gateway" / gateway_id / "bots"


async def _live(client: httpx.AsyncClient, admin: dict[str, str], gateway_id: str) -> bool:
    listed = (await client.get("/gateways", headers=admin)).json()
    return any(g["gateway_id"] == gateway_id and g.get("live") for g in listed)


async def test_a_lost_hosts_bots_run_on_a_live_gateway_with_their_open_trades(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    admin = bearer(stack.admin_token)
    service, lost, bots_root = await _second_gateway(stack, tmp_path)
    try:
        await async_wait_for(lambda: _live(client, admin, lost), timeout=60, what=f"gateway {lost} live")
        before: dict[str, dict[str, Any]] = {}
        for n in range(2):
            bot_id = await approved_bot(client, stack, admin, f"failover-{n}", pairs=[["BTC/USDT", "ETH/USDT"][n]])
            started = await client.post(f"/bots/{bot_id}/start", headers=admin)
            assert started.status_code == 200, started.text
            assert started.json()["gateway_id"] == lost
            await wait_bot(client, admin, bot_id, "running")
            status = await wait_status(client, admin, bot_id, "running", open_trades=True)
            (trade,) = status["open_trades"]
            before[bot_id] = {"trade": trade, "generation": (await get_bot(client, admin, bot_id))["generation"]}

        # The host is lost: the gateway and every bot process of it die at once.
        assert service.proc is not None
        os.killpg(service.proc.pid, signal.SIGKILL)
        for orphan in find_orphans(bots_root):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan.pid, signal.SIGKILL)
        lost_at = time.monotonic()

        async def moved(bot_id: str) -> dict[str, Any] | None:
            bot = await get_bot(client, admin, bot_id)
            if bot["gateway_id"] == stack.gateway_id and bot["actual_state"] == "running":
                return bot
            return None

        for bot_id, was in before.items():
            bot = await async_wait_for(lambda b=bot_id: moved(b), timeout=60, what=f"bot {bot_id} on a live gateway")
            assert bot["generation"] == was["generation"] + 1
            status = await wait_status(client, admin, bot_id, "running", open_trades=True)
            trades = {t["trade_id"]: t for t in status["open_trades"]}
            trade = was["trade"]
            assert trade["trade_id"] in trades, (trade, status["open_trades"])
            assert trades[trade["trade_id"]]["open_rate"] == pytest.approx(trade["open_rate"])
        took = time.monotonic() - lost_at
        assert took < 60, f"{took:.0f} s from the host's loss to every bot trading again"

        # Why each bot moved is in its history.
        for bot_id in before:
            audit = await client.get("/audit", params={"action": "bot.failover", "target_id": bot_id}, headers=admin)
            assert audit.status_code == 200, audit.text
            (row,) = [r for r in audit.json()["items"] if r["outcome"] == "requested"]
            assert row["details"]["from_gateway"] == lost
            assert row["details"]["to_gateway"] == stack.gateway_id
            assert row["actor"] == "freqfleet:failover"
            assert f"its lease on gateway {lost} ended" in row["reason"]
    finally:
        service.stop()
        for orphan in find_orphans(bots_root):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan.pid, signal.SIGKILL)
        await client.delete(f"/gateways/{lost}", headers=admin)  # no later test places a bot on it
        for bot_id in before if "before" in locals() else {}:
            await client.post(f"/bots/{bot_id}/stop", headers=admin)
