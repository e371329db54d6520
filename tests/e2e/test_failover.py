"""Three gateways on one stack: the stack's (A), and two started here with leases of 6 s and little room, so that A
is where bots move (B, the host to lose, and C, the host to freeze); every bot in an open trade with its trades in
PostgreSQL, placed on B or C by pinning it there for its start (and unpinned at once: pinned bots never move):

- **drain**: B's 5 bots are moved to A one at a time (each stopped, then started there with the same open trade),
  never with a process on both gateways at once;
- **a host lost and a host frozen, at once**: undrained, B runs two new bots and C two; B and its bots are killed
  with SIGKILL, C's gateway is stopped with SIGSTOP (its launcher and bots go on). C's bots end themselves (their
  lease watchdog, exit 75) before their leases end; once the leases have ended the management server starts all four
  on A, at the next generation, with the same open trade (same id, same open rate), and says so in the audit log.
  Every 0.2 s throughout, the Freqtrade processes on C's and A's folders are listed: never one bot on both. The old
  database password C's bots had is refused. C resumed (SIGCONT) starts nothing: it finds its bots held by A."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from freqfleet.embedded import restricted_user
from tests.e2e.conftest import Service, Stack, bearer, get_bot, wait_bot, wait_status
from tests.e2e.test_bots import bot_body, upload
from tests.enrollment import enroll_gateway
from tests.helpers import async_wait_for, free_port
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.redis_acl import acl_rules, acl_user

pytestmark = pytest.mark.slow

LEASE_SECONDS = 6


async def _extra_gateway(
    stack: Stack, tmp_path: Path, name: str, max_bots: int, uid_offset: int
) -> tuple[Service, str, Path]:
    """A gateway of its own folder, ports, uids and Valkey user, enrolled, with leases and room for ``max_bots`` (less
    than the stack's: placement takes the one with the most free capacity first); started (not yet heard of)."""
    gateway_id = f"gw-{name}-{uuid.uuid4().hex[:6]}"
    data_dir = tmp_path / f"{name}-host"
    await enroll_gateway(stack.database_url, gateway_id, data_dir / "gateway" / gateway_id)
    ports = random.randrange(20_000, 60_000, 100)
    env = stack.services["gateway"].env | {
        "FREQFLEET_DATA_DIR": str(data_dir),
        "FREQFLEET_GATEWAY_ID": gateway_id,
        "FREQFLEET_GATEWAY_PORT": str(free_port()),
        "FREQFLEET_REDIS_URL": restricted_user(stack.redis_url, acl_user(gateway_id), acl_rules(gateway_id)),
        "FREQFLEET_MAX_BOTS": str(max_bots),
        "FREQFLEET_LEASE_SECONDS": str(LEASE_SECONDS),
        "FREQFLEET_BOT_PORT_RANGE_START": str(ports),
        "FREQFLEET_BOT_PORT_RANGE_END": str(ports + 29),
        "FREQFLEET_SANDBOX_UID_BASE": str(int(os.environ.get("FREQFLEET_SANDBOX_UID_BASE", "610000")) + uid_offset),
    }
    service = Service("gateway", env, stack.logs / f"{gateway_id}.log")
    service.start()
    return service, gateway_id, data_dir / "gateway" / gateway_id / "bots"


async def _live(client: httpx.AsyncClient, admin: dict[str, str], gateway_id: str) -> bool:
    answer = await client.get("/gateways", headers=admin)
    assert answer.status_code == 200, answer.text
    return any(g["gateway_id"] == gateway_id and g["live"] for g in answer.json())


_STRATEGY: dict[str, str] = {}


async def _strategy(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """One always-enter strategy for every bot of this file, uploaded and approved once (each upload is checked by
    the worker with a backtest: nine of them would load the 2 cores for a minute)."""
    if "id" not in _STRATEGY:
        strategy = await upload(client, admin, f"failover-{uuid.uuid4().hex[:6]}")
        approved = await client.post(f"/strategies/{strategy['id']}/approve", headers=admin)
        assert approved.status_code == 200, approved.text
        _STRATEGY["id"] = strategy["id"]
    return _STRATEGY["id"]


async def _trading_on(
    client: httpx.AsyncClient, stack: Stack, admin: dict[str, str], gateway_id: str | None, names: list[str]
) -> dict[str, dict[str, Any]]:
    """New bots started on ``gateway_id`` (pinned there for the start, then unpinned; None: where placement puts
    them, the stack's), each in its one open trade: the trade and generation, by bot id."""
    pairs = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT"]
    found: dict[str, dict[str, Any]] = {}
    for n, name in enumerate(names):
        created = await client.post(
            "/bots", json=bot_body(name, await _strategy(client, admin), [pairs[n % 5]]), headers=admin
        )
        assert created.status_code == 201, created.text
        bot_id = created.json()["id"]
        if gateway_id is not None:
            pinned = await client.patch(
                f"/bots/{bot_id}", json={"placement": {"gateway_id": gateway_id}}, headers=admin
            )
            assert pinned.status_code == 200, pinned.text
        started = await client.post(f"/bots/{bot_id}/start", headers=admin)
        assert started.status_code == 200, started.text
        assert started.json()["gateway_id"] == (gateway_id or stack.gateway_id)
        if gateway_id is not None:
            unpinned = await client.patch(f"/bots/{bot_id}", json={"placement": None}, headers=admin)
            assert unpinned.json()["placement"] is None
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


def _bots_root(service: Service, gateway_id: str) -> Path:
    return Path(service.env["FREQFLEET_DATA_DIR"]) / "gateway" / gateway_id / "bots"


def _pids(bots_root: Path) -> dict[str, int]:
    """The bots with a Freqtrade process on this folder, by id (its pid), seen by the host, not by a gateway."""
    return {orphan.bot_id: orphan.pid for orphan in find_orphans(bots_root)}


def _refused(db_url: str) -> bool:
    """Whether the bot's trade database refuses ``db_url`` (its role's password, as the bot's config had it)."""
    try:
        psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return "password authentication failed" in str(exc)
    return False


async def _moved(client: httpx.AsyncClient, admin: dict[str, str], bot_id: str, to: str) -> dict[str, Any] | None:
    bot = await get_bot(client, admin, bot_id)
    return bot if bot["gateway_id"] == to and bot["actual_state"] == "running" else None


async def _same_trade(client: httpx.AsyncClient, admin: dict[str, str], bot_id: str, was: dict[str, Any]) -> None:
    status = await wait_status(client, admin, bot_id, "running", open_trades=True)
    trades = {t["trade_id"]: t for t in status["open_trades"]}
    assert was["trade"]["trade_id"] in trades, (was["trade"], status["open_trades"])
    assert trades[was["trade"]["trade_id"]]["open_rate"] == pytest.approx(was["trade"]["open_rate"])


async def _failover_row(client: httpx.AsyncClient, admin: dict[str, str], bot_id: str) -> dict[str, Any]:
    audit = await client.get("/audit", params={"action": "bot.failover", "target_id": bot_id}, headers=admin)
    assert audit.status_code == 200, audit.text
    (row,) = [r for r in audit.json()["items"] if r["outcome"] == "requested"]
    assert row["actor"] == "freqfleet:failover"
    return dict(row)


async def test_a_drained_gateway_a_lost_host_and_a_frozen_one_leave_no_bot_behind_and_none_twice(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    admin = bearer(stack.admin_token)
    here = stack.gateway_id
    here_root = _bots_root(stack.services["gateway"], here)
    lost_service, lost, lost_root = await _extra_gateway(stack, tmp_path, "lost", 5, 50_000)
    frozen_service: Service | None = None
    frozen_root: Path | None = None
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
        frozen_service, frozen, frozen_root = await _extra_gateway(stack, tmp_path, "frozen", 3, 60_000)  # meanwhile
        deadline = time.monotonic() + 180
        while True:
            on_here = await _processes(stack.gateway, stack.admin_token)
            there = await _processes(str(second["api_url"]), stack.admin_token)
            assert not set(on_here) & set(there) & set(drained), f"two processes of one bot: {on_here} {there}"
            bots = [await get_bot(client, admin, b) for b in drained]
            if all(b["gateway_id"] == here and b["actual_state"] == "running" for b in bots):
                break
            assert time.monotonic() < deadline, f"not all moved in 180 s: {bots}"
            await asyncio.sleep(0.25)
        for bot_id, was in drained.items():
            await _same_trade(client, admin, bot_id, was)  # its open trade came along
        before |= await _trading_on(client, stack, admin, None, ["while-drained"])  # not placed there
        undrained = await client.delete(f"/gateways/{lost}/drain", headers=admin)
        assert undrained.json()["draining"] is False

        # Undrained, B takes two new bots, and C two.
        await async_wait_for(lambda: _live(client, admin, frozen), timeout=60, what=f"gateway {frozen} live")
        lost_bots = await _trading_on(client, stack, admin, lost, ["failover-0", "failover-1"])
        frozen_bots = await _trading_on(client, stack, admin, frozen, ["frozen-0", "frozen-1"])
        before |= lost_bots | frozen_bots
        frozen_pids = _pids(frozen_root)
        assert set(frozen_bots) <= set(frozen_pids)
        old_db_urls = {b: json.loads((frozen_root / b / "config.json").read_text())["db_url"] for b in frozen_bots}
        assert not any(_refused(url) for url in old_db_urls.values())

        # B is lost (the gateway and every bot process of it die at once); C freezes (its gateway only).
        assert lost_service.proc is not None
        assert frozen_service.proc is not None
        os.killpg(lost_service.proc.pid, signal.SIGKILL)
        for orphan in find_orphans(lost_root):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan.pid, signal.SIGKILL)
        os.kill(frozen_service.proc.pid, signal.SIGSTOP)
        lost_at = time.monotonic()

        # Until all four run here: never a bot with a process on C and one here; when each of C's ended.
        ended_at: dict[str, float] = {}
        deadline = lost_at + 60
        while True:
            on_frozen, on_here = _pids(frozen_root), _pids(here_root)
            twice = set(on_frozen) & set(on_here) & set(frozen_bots)
            assert not twice, f"two processes of one bot: {on_frozen} {on_here}"
            for bot_id in frozen_bots:
                if bot_id not in on_frozen:
                    ended_at.setdefault(bot_id, time.time())
            moved = [await _moved(client, admin, b, here) for b in lost_bots | frozen_bots]
            if all(moved):
                break
            assert time.monotonic() < deadline, f"not all four running here within 60 s: {moved}"
            await asyncio.sleep(0.2)
        took = time.monotonic() - lost_at

        for bot_id, was in (lost_bots | frozen_bots).items():
            assert (await get_bot(client, admin, bot_id))["generation"] == was["generation"] + 1
            await _same_trade(client, admin, bot_id, was)
            row = await _failover_row(client, admin, bot_id)  # why it moved is in its history
            assert row["details"]["from_gateway"] == (lost if bot_id in lost_bots else frozen)
            assert row["details"]["to_gateway"] == here
            assert f"its lease on gateway {row['details']['from_gateway']} ended" in row["reason"]
            if bot_id in frozen_bots:  # it ended itself before its lease did, saying why
                lease_ended = datetime.fromisoformat(row["details"]["lease_ended_at"]).timestamp()
                assert ended_at[bot_id] <= lease_ended + 0.5, (ended_at[bot_id], lease_ended)
                console = (frozen_root / bot_id / "console.log").read_text()
                assert "freqfleet-watchdog: the gateway's lease on this bot was not renewed in time" in console
                assert _refused(old_db_urls[bot_id])  # a stale holder can't write its trades
        assert took < 60, f"{took:.0f} s from the hosts' loss to every bot trading again"

        # C resumed: it finds its bots held here and starts nothing.
        os.kill(frozen_service.proc.pid, signal.SIGCONT)

        async def settled() -> bool:
            found = await _processes_and_desired(frozen_service.env, stack.admin_token)
            return found is not None and all(found.get(b) == ("stopped", None) for b in frozen_bots)

        await async_wait_for(settled, timeout=30, what=f"gateway {frozen} to give its bots up")
        assert not set(_pids(frozen_root)) & set(frozen_bots)
        for bot_id, was in frozen_bots.items():
            bot = await _moved(client, admin, bot_id, here)
            assert bot is not None
            assert bot["generation"] == was["generation"] + 1
    finally:
        if frozen_service is not None and frozen_service.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen_service.proc.pid, signal.SIGCONT)
        for service, root in ((lost_service, lost_root), (frozen_service, frozen_root)):
            if service is None or root is None:
                continue
            service.stop()
            for orphan in find_orphans(root):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(orphan.pid, signal.SIGKILL)
            gateway_id = service.env["FREQFLEET_GATEWAY_ID"]
            await client.delete(f"/gateways/{gateway_id}", headers=admin)  # no later test places a bot on it
        for bot_id in before:
            await client.post(f"/bots/{bot_id}/stop", headers=admin)


async def _processes_and_desired(env: dict[str, str], token: str) -> dict[str, tuple[str, int | None]] | None:
    """What this gateway says of each of its bots (desired state, pid); None while it does not answer."""
    url = f"http://127.0.0.1:{env['FREQFLEET_GATEWAY_PORT']}/api/v1/bots"
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            answer = await http.get(url, headers=bearer(token))
        except httpx.HTTPError:
            return None
    if answer.status_code != 200:
        return None
    return {b["bot_id"]: (b["desired"], b["pid"]) for b in answer.json()["bots"]}
