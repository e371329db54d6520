"""Bots end to end: the management API, the bus, the gateway and real Freqtrade bots, all real processes.

One stack per module (see ``conftest.py``). The tests use only the HTTP APIs, as a user would; the
bus and the database are read only to show where a command waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
import redis.asyncio as aioredis
from sqlalchemy import make_url

from freqfleet.embedded import EmbeddedPostgres
from management_server.backups.archive import pg_tool
from management_server.gateways.service import LIVE_WINDOW
from shared.bus.streams import commands_stream
from tests.e2e.conftest import (
    ADMIN_EMAIL,
    PASSWORD,
    Stack,
    alive,
    bearer,
    gateway_bots,
    get_bot,
    login,
    register,
    wait_bot,
    wait_status,
)
from tests.helpers import async_wait_for
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET
from trading_gateway.bots import STATE_FILE
from trading_gateway.bots.adoption import find_orphans

pytestmark = pytest.mark.slow

PAIRS = ["BTC/USDT", "ETH/USDT"]


def bot_body(name: str, strategy_id: str, pairs: list[str] = PAIRS) -> dict[str, Any]:
    return {
        "name": name,
        "strategy_id": strategy_id,
        "pairs": pairs,
        "timeframe": "1m",
        "stake_amount": "100",
        "max_open_trades": len(pairs),
    }


async def upload(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    """The always-enter strategy (market orders: it is in a trade on every pair within seconds)."""
    response = await client.post("/strategies", json={"name": name, "source": ALWAYS_ENTER_MARKET}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def approved_bot(
    client: httpx.AsyncClient, stack: Stack, headers: dict[str, str], name: str, pairs: list[str] = PAIRS
) -> str:
    """A user's bot on their own strategy, approved by the admin; its id."""
    strategy = await upload(client, headers, f"{name}-strategy")
    approved = await client.post(f"/strategies/{strategy['id']}/approve", headers=bearer(stack.admin_token))
    assert approved.status_code == 200, approved.text
    created = await client.post("/bots", json=bot_body(name, strategy["id"], pairs), headers=headers)
    assert created.status_code == 201, created.text
    bot_id: str = created.json()["id"]
    return bot_id


async def trades(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/bots/{bot_id}/trades", headers=headers)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def running_pid(stack: Stack, bot_id: str) -> int:
    """The pid of the bot's Freqtrade process, as the gateway reports it; alive."""
    view = (await gateway_bots(stack))[bot_id]
    assert view["actual"] in ("running", "paused"), view
    pid = view["pid"]
    assert isinstance(pid, int), view
    assert alive(pid), view
    return pid


async def audit_actions(client: httpx.AsyncClient, stack: Stack, bot_id: str) -> list[tuple[str, str]]:
    response = await client.get(
        "/audit", params={"target_type": "bot", "target_id": bot_id}, headers=bearer(stack.admin_token)
    )
    assert response.status_code == 200, response.text
    return [(e["action"], e["outcome"]) for e in reversed(response.json()["items"])]


async def test_register_upload_approve_start_pause_resume_forceexit_stop(
    client: httpx.AsyncClient, stack: Stack, postgres: EmbeddedPostgres
) -> None:
    admin = bearer(stack.admin_token)
    user = await register(client, "trader@e2e.example.com")

    strategy = await upload(client, user, "always-enter")
    assert (strategy["class_name"], strategy["status"], strategy["errors"]) == ("AlwaysEnter", "pending_review", [])
    created = await client.post("/bots", json=bot_body("walkthrough", strategy["id"]), headers=user)
    assert created.status_code == 201, created.text
    bot = created.json()
    bot_id = bot["id"]
    assert (bot["desired_state"], bot["actual_state"], bot["generation"]) == ("stopped", "stopped", 0)
    assert bot["trade_db"] == "postgres"  # a database of its own on the stack's PostgreSQL (FREQFLEET_BOT_DB)

    # Not approved yet: the start is refused, with the reason, and nothing runs.
    refused = await client.post(f"/bots/{bot_id}/start", headers=user)
    assert refused.status_code == 409, refused.text
    assert "an admin must approve it" in refused.json()["detail"]
    assert bot_id not in await gateway_bots(stack)

    approved = await client.post(f"/strategies/{strategy['id']}/approve", headers=admin)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"

    # Start: within 30 s the bot runs, reports live status, and is in a trade.
    deadline = time.monotonic() + 30
    started = await client.post(f"/bots/{bot_id}/start", headers=user)
    assert started.status_code == 200, started.text
    body = started.json()
    assert (body["desired_state"], body["actual_state"], body["generation"]) == ("running", "starting", 1)
    assert body["gateway_id"] == stack.gateway_id
    assert body["notice"] is None  # the gateway is live
    await wait_bot(client, user, bot_id, "running", timeout=deadline - time.monotonic())
    status = await wait_status(client, user, bot_id, "running", open_trades=True, timeout=deadline - time.monotonic())
    assert status["actual_state"] == "running"
    assert status["updated_at"] is not None
    assert status["age_seconds"] >= 0
    assert {t["pair"] for t in status["open_trades"]} <= set(PAIRS)
    pid = await running_pid(stack, bot_id)

    # Its log over REST, read on its gateway, without its secrets; and followed as Server-Sent Events.
    logged = await client.get(f"/bots/{bot_id}/logs", params={"lines": 30}, headers=user)
    assert logged.status_code == 200, logged.text
    log = logged.json()
    assert (log["gateway_id"], log["source"]) == (stack.gateway_id, "the bot's Freqtrade API (its in-memory log)")
    assert 0 < len(log["lines"]) <= 30
    secret = json.loads((stack.bots_root / bot_id / "config.json").read_text())["api_server"]["password"]
    assert secret not in logged.text
    stranger = await register(client, "stranger@e2e.example.com")
    assert (await client.get(f"/bots/{bot_id}/logs", headers=stranger)).status_code == 404
    async with client.stream("GET", f"/bots/{bot_id}/logs", params={"lines": 5, "follow": "true"}, headers=user) as sse:
        assert sse.headers["content-type"].startswith("text/event-stream")
        events = []
        async for line in sse.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            if len(events) >= 5:
                break
    assert all("line" in e for e in events)

    # The open trades reach the bot's trade list too (TRADE_OPENED).
    opened = {t["trade_id"] for t in status["open_trades"]}
    await async_wait_for(
        lambda: _has_trades(client, user, bot_id, opened, is_open=True), timeout=30, what="the open trades listed"
    )

    paused = await client.post(f"/bots/{bot_id}/pause", headers=user)
    assert paused.status_code == 200, paused.text
    assert paused.json()["desired_state"] == "paused"
    await wait_bot(client, user, bot_id, "paused")
    await wait_status(client, user, bot_id, "paused")

    resumed = await client.post(f"/bots/{bot_id}/resume", headers=user)
    assert resumed.status_code == 200, resumed.text
    await wait_bot(client, user, bot_id, "running")
    status = await wait_status(client, user, bot_id, "running", open_trades=True)
    to_close = {t["trade_id"] for t in status["open_trades"]}
    assert await running_pid(stack, bot_id) == pid  # paused and resumed in the same process

    exited = await client.post(f"/bots/{bot_id}/forceexit", json={"trade_id": "all"}, headers=user)
    assert exited.status_code == 200, exited.text
    closed = await async_wait_for(
        lambda: _has_trades(client, user, bot_id, to_close, is_open=False), timeout=60, what="the trades closed"
    )
    assert {t["exit_reason"] for t in closed} == {"force_exit"}
    assert all(t["close_rate"] is not None and t["profit_abs"] is not None for t in closed)

    async def exits_done() -> bool:  # the first status with no open trade left after the force-exit
        return ("bot.forceexit", "done") in await audit_actions(client, stack, bot_id)

    await async_wait_for(exits_done, timeout=30, what="the force-exit's done row")

    stopped = await client.post(f"/bots/{bot_id}/stop", headers=user)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["desired_state"] == "stopped"
    await wait_bot(client, user, bot_id, "stopped")
    assert not alive(pid)
    view = (await gateway_bots(stack))[bot_id]
    assert (view["actual"], view["pid"]) == ("stopped", None)
    after = (await client.get(f"/bots/{bot_id}/status", headers=user)).json()
    assert (after["state"], after["actual_state"], after["open_trades"]) == (None, "stopped", [])  # nothing live

    listed = await trades(client, user, bot_id)
    assert to_close <= {t["trade_id"] for t in listed}
    assert {t["pair"] for t in listed} <= set(PAIRS)

    # Its trades were written into its own PostgreSQL database (no SQLite file on the gateway), by its own role,
    # whose password is in its config alone: not in any answer, nor in the services' logs.
    db_url = json.loads((stack.bots_root / bot_id / "config.json").read_text())["db_url"]
    name = "ffbot_" + bot_id.replace("-", "")
    assert db_url.startswith(f"postgresql+psycopg://{name}:")
    assert db_url.endswith(f":{postgres.port}/{name}")
    assert not (stack.bots_root / bot_id / "tradesv3.sqlite").exists()
    in_db = await bot_database_trades(postgres, name)
    assert {t["trade_id"]: t["is_open"] for t in listed} == in_db
    password = make_url(db_url).password
    assert password
    assert len(password) >= 32
    shown = (await client.get(f"/bots/{bot_id}", headers=user)).text + json.dumps(await gateway_bots(stack))
    assert password not in shown
    for service in stack.services.values():
        assert password not in service.output()

    # Every control action is in the audit log, refused start included, each command with the gateway's answer and
    # then with what came of it.
    audited = await audit_actions(client, stack, bot_id)
    assert [row for row in audited if row[1] != "accepted"] == [
        ("bot.create", "success"),
        ("bot.start", "failure"),
        ("bot.start", "requested"),
        ("bot.start", "done"),
        ("bot.pause", "requested"),
        ("bot.pause", "done"),
        ("bot.resume", "requested"),
        ("bot.resume", "done"),
        ("bot.forceexit", "requested"),
        ("bot.forceexit", "done"),
        ("bot.stop", "requested"),
        ("bot.stop", "done"),
    ]
    accepted = sorted(action for action, outcome in audited if outcome == "accepted")
    assert accepted == sorted(["bot.start", "bot.pause", "bot.resume", "bot.forceexit", "bot.stop"])

    # Deleted: its database is backed up (pg_dump), then dropped with its role.
    deleted = await client.delete(f"/bots/{bot_id}", headers=user)
    assert deleted.status_code == 204, deleted.text
    (backup,) = stack.data_dir.rglob(f"bot-databases/{bot_id}-*.dump")
    assert backup.stat().st_mode & 0o077 == 0
    assert await bot_database_gone(postgres, name)
    listing = await asyncio.create_subprocess_exec(
        pg_tool("pg_restore"), "--list", str(backup), stdout=asyncio.subprocess.PIPE
    )
    restored = (await listing.communicate())[0].decode()
    assert "TABLE DATA public trades" in restored
    assert "TABLE DATA public orders" in restored


async def bot_database_trades(postgres: EmbeddedPostgres, name: str) -> dict[int, bool]:
    """The trades in a bot's own database (read as the provisioning role, a member of the bot's)."""
    conn = await asyncpg.connect(postgres.provisioner_url().rsplit("/", 1)[0] + f"/{name}")
    try:
        return {r["id"]: r["is_open"] for r in await conn.fetch("SELECT id, is_open FROM trades")}
    finally:
        await conn.close()


async def bot_database_gone(postgres: EmbeddedPostgres, name: str) -> bool:
    conn = await asyncpg.connect(postgres.provisioner_url())
    try:
        databases = await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
        roles = await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", name)
        return bool(databases == 0 and roles == 0)
    finally:
        await conn.close()


async def _has_trades(
    client: httpx.AsyncClient, headers: dict[str, str], bot_id: str, trade_ids: set[int], *, is_open: bool
) -> list[dict[str, Any]] | None:
    """The listed trades with these ids, once each is listed as open (or closed)."""
    found = [t for t in await trades(client, headers, bot_id) if t["trade_id"] in trade_ids]
    if {t["trade_id"] for t in found} == trade_ids and all(t["is_open"] is is_open for t in found):
        return found
    return None


async def start(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str) -> dict[str, Any]:
    response = await client.post(f"/bots/{bot_id}/start", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def trading(client: httpx.AsyncClient, stack: Stack, headers: dict[str, str], bot_id: str) -> int:
    """Wait until the bot runs and is in a trade; the pid of its process."""
    await wait_bot(client, headers, bot_id, "running")
    await wait_status(client, headers, bot_id, "running", open_trades=True)
    return await running_pid(stack, bot_id)


async def emergency(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/emergency-stop", json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["completed"] is True, answer
    return answer


async def all_closed(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str) -> list[dict[str, Any]] | None:
    listed = await trades(client, headers, bot_id)
    return listed if listed and not any(t["is_open"] for t in listed) else None


async def test_emergency_stop_mine_halts_only_yours_and_all_halts_every_users(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    admin = bearer(stack.admin_token)
    alice, bob, carol = await asyncio.gather(
        *(register(client, f"{name}@e2e.example.com") for name in ("alice", "bob", "carol"))
    )
    alice_bot, bob_bot, carol_bot = await asyncio.gather(
        approved_bot(client, stack, alice, "alice-bot", ["BTC/USDT"]),
        approved_bot(client, stack, bob, "bob-bot", ["ETH/USDT"]),
        approved_bot(client, stack, carol, "carol-bot", ["XRP/USDT"]),
    )

    # Bob can neither see nor touch Alice's bot: to him it does not exist.
    for method, path in (
        ("GET", f"/bots/{alice_bot}"),
        ("GET", f"/bots/{alice_bot}/status"),
        ("POST", f"/bots/{alice_bot}/start"),
        ("POST", f"/bots/{alice_bot}/stop"),
    ):
        response = await client.request(method, path, headers=bob)
        assert (response.status_code, response.json()) == (404, {"detail": "No such bot."}), (method, path)
    other = await client.post("/emergency-stop", json={"bot_ids": [alice_bot]}, headers=bob)
    assert other.status_code == 404, other.text
    assert [b["id"] for b in (await client.get("/bots", headers=bob)).json()] == [bob_bot]

    owners = {alice_bot: alice, bob_bot: bob, carol_bot: carol}
    await asyncio.gather(*(start(client, headers, bot_id) for bot_id, headers in owners.items()))
    pids = dict(
        zip(
            owners,
            await asyncio.gather(*(trading(client, stack, headers, bot_id) for bot_id, headers in owners.items())),
            strict=True,
        )
    )

    # Carol's "mine" halts her bot only: its trade closed, its process gone; the others trade on.
    mine = await emergency(client, carol, scope="mine")
    assert [(r["bot_id"], r["outcome"], r["actual_state"]) for r in mine["results"]] == [
        (carol_bot, "halted", "halted")
    ]
    bot = await get_bot(client, carol, carol_bot)
    assert (bot["desired_state"], bot["actual_state"]) == ("halted", "halted")
    assert not alive(pids[carol_bot])
    closed = await async_wait_for(
        lambda: all_closed(client, carol, carol_bot), timeout=30, what="carol's trades closed"
    )
    assert {t["exit_reason"] for t in closed} == {"force_exit"}
    for bot_id in (alice_bot, bob_bot):
        assert (await get_bot(client, owners[bot_id], bot_id))["actual_state"] == "running"
        assert await running_pid(stack, bot_id) == pids[bot_id]

    # Only an admin halts the whole fleet.
    refused = await client.post("/emergency-stop", json={"scope": "all"}, headers=alice)
    assert refused.status_code == 403, refused.text
    assert await running_pid(stack, alice_bot) == pids[alice_bot]

    # The admin's "all" halts the running bots of both other users.
    everything = await emergency(client, admin, scope="all", reason="e2e: exchange incident")
    outcomes = {r["bot_id"]: r["outcome"] for r in everything["results"]}
    assert set(owners) <= outcomes.keys()  # with the bots of the other tests
    assert set(outcomes.values()) == {"halted"}
    views = await gateway_bots(stack)
    for bot_id in (alice_bot, bob_bot):
        headers = owners[bot_id]
        assert not alive(pids[bot_id])
        assert (views[bot_id]["actual"], views[bot_id]["pid"]) == ("halted", None)
        bot = await get_bot(client, headers, bot_id)
        assert (bot["desired_state"], bot["actual_state"]) == ("halted", "halted")
        closed = await async_wait_for(
            lambda b=bot_id, h=headers: all_closed(client, h, b), timeout=30, what="trades closed"
        )
        assert {t["exit_reason"] for t in closed} == {"force_exit"}

    response = await client.get("/audit", params={"action": "bot.emergency_stop"}, headers=admin)
    assert [(e["actor"], e["target_id"]) for e in reversed(response.json()["items"])][-2:] == [
        ("carol@e2e.example.com", "mine"),
        (ADMIN_EMAIL, "all"),
    ]
    denied = await client.get("/audit", params={"action": "authz.denied"}, headers=admin)
    assert ("alice@e2e.example.com", "POST /api/v1/emergency-stop") in {
        (e["actor"], e["target_id"]) for e in denied.json()["items"]
    }


async def gateway_last_seen_age(stack: Stack) -> float:
    """Seconds since the management server last heard the gateway's heartbeat (from its database)."""
    conn = await asyncpg.connect(stack.database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        age = await conn.fetchval(
            "SELECT EXTRACT(EPOCH FROM now() - last_seen_at) FROM gateways WHERE gateway_id = $1", stack.gateway_id
        )
    finally:
        await conn.close()
    return float(age)


async def test_a_command_waits_while_the_gateway_is_down_and_a_lost_bot_is_brought_back(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    user = await register(client, "dave@e2e.example.com")
    bot_id = await approved_bot(client, stack, user, "dave-bot", ["SOL/USDT"])
    await start(client, user, bot_id)
    await wait_bot(client, user, bot_id, "running", timeout=90)
    first = await running_pid(stack, bot_id)

    # The gateway goes, and comes back on an empty folder (a restore, a new disk): it will have no bot at all.
    gateway = stack.services["gateway"]
    assert gateway.stop() == -signal.SIGTERM  # uvicorn shuts down cleanly, then re-raises the signal
    assert "gateway stopped" in gateway.last_run()
    assert not alive(first)
    shutil.rmtree(stack.bots_root)  # its bots' folders and what it remembers of them; its identity stays
    (stack.bots_root.parent / STATE_FILE).unlink()
    # The management server counts a gateway silent once it missed its heartbeats for LIVE_WINDOW.
    silent = LIVE_WINDOW.total_seconds()
    await async_wait_for(
        lambda: _older_than(stack, silent), timeout=silent + 30, interval=0.5, what="the gateway to count as silent"
    )

    # A command meanwhile waits on the gateway's stream, and the answer says so.
    answer = (await client.post(f"/bots/{bot_id}/pause", headers=user)).json()
    assert (answer["desired_state"], answer["gateway_id"]) == ("paused", stack.gateway_id)
    assert answer["notice"] == (
        f"Gateway {stack.gateway_id} has not reported for over {int(silent)} s: "
        "the command is queued and runs when it is back."
    )
    redis = aioredis.Redis.from_url(stack.redis_url)
    try:

        async def on_the_stream() -> bool:
            return answer["command_id"] in await _command_ids(redis, stack.gateway_id)

        await async_wait_for(on_the_stream, timeout=10, what="the PAUSE_BOT on the gateway's stream")
    finally:
        await redis.aclose()

    # Back, the gateway refuses the pause (it has no such bot); nobody calls, and the management server, seeing
    # the bot missing from the gateway's inventory, starts it again, paused as it should be.
    gateway.start()
    stack.wait_ready("gateway")

    async def paused_again() -> int | None:
        view = (await gateway_bots(stack)).get(bot_id)
        return view["pid"] if view is not None and view["actual"] == "paused" else None

    pid = await async_wait_for(paused_again, timeout=120, interval=0.5, what="the bot back, paused, by itself")
    assert pid != first
    await wait_bot(client, user, bot_id, "paused", timeout=30)
    audited = await client.get(
        "/audit", params={"target_type": "bot", "target_id": bot_id}, headers=bearer(stack.admin_token)
    )
    rows = [(e["action"], e["outcome"], e["actor"]) for e in audited.json()["items"]]
    assert ("bot.pause", "refused", "dave@e2e.example.com") in rows  # the gateway's answer to the queued pause
    assert ("bot.start", "requested", "freqfleet:reconcile") in rows

    stopped = await client.post(f"/bots/{bot_id}/stop", headers=user)
    assert stopped.status_code == 200, stopped.text
    await wait_bot(client, user, bot_id, "stopped")
    assert not alive(pid)


async def _older_than(stack: Stack, seconds: float) -> bool:
    return await gateway_last_seen_age(stack) > seconds


async def _command_ids(redis: aioredis.Redis, gateway_id: str) -> set[str]:
    entries = await redis.xrange(commands_stream(gateway_id))
    return {json.loads(fields[b"envelope"])["event_id"] for _, fields in entries}


def _kill9(service: Any) -> None:
    """kill -9 a service's process group (its bots run in sessions of their own and live on)."""
    assert service.proc is not None
    os.killpg(service.proc.pid, signal.SIGKILL)
    service.proc.wait(10)


async def test_killed_gateway_and_management_server_converge_to_what_should_run(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    """kill -9 of the gateway and the management server while one bot is being started and another stopped: once
    both are back, every bot is in its desired state with one process or none, and the API says so, by itself. Then a
    bot killed while its gateway is frozen comes back once the gateway is thawed."""
    user = await register(client, "erin@e2e.example.com")
    keep = await approved_bot(client, stack, user, "erin-keep", ["BTC/USDT"])
    strategy = (await get_bot(client, user, keep))["strategy_id"]
    ids = {"keep": keep}
    for name in ("going", "coming"):
        created = await client.post("/bots", json=bot_body(f"erin-{name}", strategy, ["ETH/USDT"]), headers=user)
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    for name in ("keep", "going"):
        await start(client, user, ids[name])
    for name in ("keep", "going"):
        await wait_bot(client, user, ids[name], "running", timeout=90)

    # One stopped, one started, and before anything settles both services die.
    assert (await client.post(f"/bots/{ids['going']}/stop", headers=user)).status_code == 200
    await start(client, user, ids["coming"])
    _kill9(stack.services["gateway"])
    _kill9(stack.services["management"])
    stack.services["management"].start()
    stack.wait_ready("management")
    stack.services["gateway"].start()
    stack.wait_ready("gateway")
    user = bearer(login(stack, "erin@e2e.example.com", PASSWORD))  # a new login: the old token is still fine too

    desired = {"keep": "running", "going": "stopped", "coming": "running"}

    async def converged() -> dict[str, int] | None:
        states = {name: (await get_bot(client, user, bot_id))["actual_state"] for name, bot_id in ids.items()}
        processes = {name: 0 for name in ids}
        for orphan in find_orphans(stack.bots_root):
            for name, bot_id in ids.items():
                processes[name] += orphan.bot_id == bot_id
        wanted = {name: int(state == "running") for name, state in desired.items()}
        return processes if states == desired and processes == wanted else None

    found = await async_wait_for(converged, timeout=120, interval=0.5, what="every bot in its desired state")
    assert found == {"keep": 1, "going": 0, "coming": 1}

    # A bot killed while its gateway is frozen (SIGSTOP): thawed, the gateway finds it gone and brings it back.
    [before] = [o.pid for o in find_orphans(stack.bots_root) if o.bot_id == ids["keep"]]
    gateway = stack.services["gateway"].proc
    assert gateway is not None
    os.kill(gateway.pid, signal.SIGSTOP)
    try:
        os.killpg(before, signal.SIGKILL)
    finally:
        os.kill(gateway.pid, signal.SIGCONT)

    async def back() -> list[int] | None:
        pids = [o.pid for o in find_orphans(stack.bots_root) if o.bot_id == ids["keep"]]
        return pids if len(pids) == 1 and pids[0] != before else None

    await async_wait_for(back, timeout=90, interval=0.5, what="the killed bot back, once")
    await wait_bot(client, user, ids["keep"], "running", timeout=60)
    for name in ("keep", "coming"):
        assert (await client.post(f"/bots/{ids[name]}/stop", headers=user)).status_code == 200
        await wait_bot(client, user, ids[name], "stopped")


# --- the management server in two worker processes (FREQFLEET_MANAGEMENT_WORKERS=2 in this stack) -----------


def requests_counted(text: str, handler: str) -> float:
    pattern = rf'^http_requests_total\{{[^}}]*handler="{re.escape(handler)}"[^}}]*status="200"[^}}]*\}} (\S+)$'
    return sum(float(found) for found in re.findall(pattern, text, re.MULTILINE))


def test_two_workers_serve_one_consumes_and_metrics_count_them_all(stack: Stack) -> None:
    service = stack.services["management"]
    assert service.proc is not None
    children = psutil.Process(service.proc.pid).children()
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]  # not multiprocessing's resource tracker
    assert len(workers) == 2, [c.cmdline() for c in children]

    with httpx.Client(base_url=stack.management, timeout=10) as client:
        me = bearer(stack.admin_token)

        def scrape() -> float:
            return requests_counted(client.get("/metrics").text, "/api/v1/users/me")

        before = scrape()
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            assert httpx.get(f"{stack.api}/users/me", headers=me, timeout=10).status_code == 200
        # A request is counted once its answer is sent: the last one may be a moment behind.
        deadline = time.monotonic() + 10
        while scrape() < before + 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = [scrape() for _ in range(6)]  # whichever worker answers, it counts both workers' requests
    assert after == [before + 40] * 6, (before, after)

    # One worker took the events consumer's lock; the other waits for it (docs/design.md, "Several processes").
    log = service.last_run()
    assert log.count("running here (this process holds its lock)") == 1, log[-3000:]
