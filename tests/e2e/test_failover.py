"""Two gateways on one stack, the second (leases on, 6 s) taking bots first, every bot in an open trade with its trades
in PostgreSQL:

- **drain**: the second gateway's 5 bots are moved to the other one at a time (each stopped, then started elsewhere
  with the same open trade), never with a process on both gateways at once;
- **a host lost**: undrained, it runs two new bots; it and its bots are killed with SIGKILL; its leases end, and the
  management server starts each bot on the live gateway, at the next generation, with the same open trade (same id,
  same open rate), and says so in the audit log."""

from __future__ import annotations

import asyncio
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
    answer = await client.get("/gateways", headers=admin)
    assert answer.status_code == 200, answer.text
    return any(g["gateway_id"] == gateway_id and g["live"] for g in answer.json())


async def _trading_on(
    client: httpx.AsyncClient, stack: Stack, admin: dict[str, str], gateway_id: str, names: list[str]
) -> dict[str, dict[str, Any]]:
    """New bots started (placed on ``gateway_id``), each in its one open trade: the trade and generation, by bot id."""
    pairs = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT"]
    found: dict[str, dict[str, Any]] = {}
    for n, name in enumerate(names):
        bot_id = await approved_bot(client, stack, admin, name, pairs=[pairs[n % len(pairs)]])
        started = await client.post(f"/bots/{bot_id}/start", headers=admin)
        assert started.status_code == 200, started.text
        assert started.json()["gateway_id"] == gateway_id
        found[bot_id] = {}
    for bot_id in found:
        await wait_bot(client, admin, bot_id, "running")
        status = await wait_status(client, admin, bot_id, "running", open_trades=True)
        (trade,) = status["open_trades"]
        found[bot_id] = {"trade": trade, "generation": (await get_bot(client, admin, bot_id))["generation"]}
    return found


async def _processes(gateway_url: str, token: str) -> dict[str, int]:
    """The bots with a process on this gateway, by id (its pid); nothing when it does not answer."""
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            answer = await http.get(f"{gateway_url}/api/v1/bots", headers=bearer(token))
        except httpx.HTTPError:
            return {}
    return {b["bot_id"]: b["pid"] for b in answer.json()["bots"] if b["pid"]} if answer.status_code == 200 else {}


async def test_a_drained_gateway_and_a_lost_host_leave_no_bot_behind_and_none_twice(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    admin = bearer(stack.admin_token)
    service, lost, bots_root = await _second_gateway(stack, tmp_path)
    before: dict[str, dict[str, Any]] = {}
    try:
        await async_wait_for(lambda: _live(client, admin, lost), timeout=60, what=f"gateway {lost} live")
        second = next(g for g in (await client.get("/gateways", headers=admin)).json() if g["gateway_id"] == lost)
        drained = await _trading_on(client, stack, admin, lost, [f"drained-{n}" for n in range(5)])
        before |= drained

        # Drained: each bot stopped there, then started here, one at a time; never a process on both.
        answer = await client.post(f"/gateways/{lost}/drain", headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json()["draining"] is True
        deadline = time.monotonic() + 180
        while True:
            here = await _processes(stack.gateway, stack.admin_token)
            there = await _processes(str(second["api_url"]), stack.admin_token)
            assert not set(here) & set(there) & set(drained), f"two processes of one bot: {here} {there}"
            bots = [await get_bot(client, admin, b) for b in drained]
            if all(b["gateway_id"] == stack.gateway_id and b["actual_state"] == "running" for b in bots):
                break
            assert time.monotonic() < deadline, f"not all moved in 180 s: {bots}"
            await asyncio.sleep(0.25)
        for bot_id, was in drained.items():
            status = await wait_status(client, admin, bot_id, "running", open_trades=True)
            trades = {t["trade_id"]: t for t in status["open_trades"]}
            assert was["trade"]["trade_id"] in trades  # its open trade came along
            assert trades[was["trade"]["trade_id"]]["open_rate"] == pytest.approx(was["trade"]["open_rate"])
        placed_here = await _trading_on(client, stack, admin, stack.gateway_id, ["while-drained"])  # not there
        before |= placed_here
        undrained = await client.delete(f"/gateways/{lost}/drain", headers=admin)
        assert undrained.json()["draining"] is False

        # A host lost: undrained, it takes two new bots; then it and they are killed.
        lost_bots = await _trading_on(client, stack, admin, lost, ["failover-0", "failover-1"])
        before |= lost_bots

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

        for bot_id, was in lost_bots.items():
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
        for bot_id in lost_bots:
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
        for bot_id in before:
            await client.post(f"/bots/{bot_id}/stop", headers=admin)
