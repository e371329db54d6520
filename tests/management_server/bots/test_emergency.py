"""Emergency stop from the management API: scopes, ownership, and outcomes reported by a gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import redis.asyncio as aioredis

from management_server.users.models import Role
from shared.bus.messages import (
    BotStarted,
    BotStartedData,
    EmergencyOutcome,
    EmergencyStopCompleted,
    EmergencyStopCompletedData,
)
from shared.bus.streams import EVENTS_STREAM, commands_stream
from tests.enrollment import gateway_events, publisher_for
from tests.helpers import async_wait_for
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.bots.test_lifecycle import GATEWAY, heartbeat
from tests.management_server.conftest import Management


async def running_bot(management: Management, headers: dict[str, str], name: str, strategy: str, redis_url: str) -> str:
    bot_id: str = (
        await management.client.post("/api/v1/bots", json=bot_body(strategy, name=name), headers=headers)
    ).json()["id"]
    started = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=headers)
    redis = aioredis.Redis.from_url(redis_url)
    event = BotStarted(
        source=f"gateway:{GATEWAY}",
        data=BotStartedData(
            bot_id=uuid.UUID(bot_id),
            generation=started.json()["generation"],
            pid=1,
            port=18100,
            freqtrade_version="2026.9",
            started_at=datetime.now(UTC),
        ),
    )
    await gateway_events(management, redis).publish(EVENTS_STREAM, event)
    await redis.aclose()

    async def is_running() -> bool:
        return bool(
            (await management.client.get(f"/api/v1/bots/{bot_id}", headers=headers)).json()["actual_state"] == "running"
        )

    await async_wait_for(is_running, timeout=10, what=f"{name} running")
    return bot_id


@contextlib.asynccontextmanager
async def fake_gateway(redis_url: str, seen: list[list[str]]) -> AsyncIterator[None]:
    """Answers every EMERGENCY_STOP on the test gateway's stream with 'halted' for each bot."""
    redis = aioredis.Redis.from_url(redis_url)
    publisher = publisher_for(redis, GATEWAY)

    async def serve() -> None:
        last = "0"
        while True:
            response = await redis.xread({commands_stream(GATEWAY): last}, block=200)
            for _, entries in response or []:
                for entry_id, fields in entries:
                    last = entry_id
                    message = json.loads(fields[b"envelope"])
                    if message["type"] != "EMERGENCY_STOP":
                        continue
                    bots = [b["bot_id"] for b in message["data"]["bots"]]
                    seen.append(sorted(bots))
                    await publisher.publish(
                        EVENTS_STREAM,
                        EmergencyStopCompleted(
                            source=f"gateway:{GATEWAY}",
                            data=EmergencyStopCompletedData(
                                command_id=uuid.UUID(message["event_id"]),
                                gateway_id=GATEWAY,
                                seconds=0.5,
                                results=[
                                    EmergencyOutcome(bot_id=uuid.UUID(b), outcome="halted", trades_closed=1)
                                    for b in bots
                                ],
                            ),
                        ),
                    )

    task = asyncio.create_task(serve())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()


async def test_mine_halts_only_mine_and_all_is_for_admins(management: Management, redis_url: str) -> None:
    admin = await session_of(management, "root@example.com", Role.admin)
    alice = await session_of(management, "alice@example.com")
    bob = await session_of(management, "bob@example.com")
    await heartbeat(management)
    strategies = {}
    for who, headers in (("alice", alice), ("bob", bob)):
        strategy = (await upload(management, headers)).json()["id"]
        await management.client.post(f"/api/v1/strategies/{strategy}/approve", headers=admin)
        strategies[who] = strategy
    alice_bots = [await running_bot(management, alice, f"a{i}", strategies["alice"], redis_url) for i in range(2)]
    bob_bot = await running_bot(management, bob, "b0", strategies["bob"], redis_url)

    seen: list[list[str]] = []
    async with fake_gateway(redis_url, seen):
        refused = await management.client.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=alice)
        assert refused.status_code == 403
        other = await management.client.post("/api/v1/emergency-stop", json={"bot_ids": [bob_bot]}, headers=alice)
        assert other.status_code == 404

        mine = await management.client.post("/api/v1/emergency-stop", json={"scope": "mine"}, headers=alice)
        assert mine.status_code == 200, mine.text
        body = mine.json()
        assert body["completed"] is True
        assert sorted(r["bot_id"] for r in body["results"]) == sorted(alice_bots)
        assert {r["outcome"] for r in body["results"]} == {"halted"}
        assert seen == [sorted(alice_bots)]
        bob_state = (await management.client.get(f"/api/v1/bots/{bob_bot}", headers=bob)).json()
        assert (bob_state["desired_state"], bob_state["actual_state"]) == ("running", "running")

        everything = await management.client.post(
            "/api/v1/emergency-stop", json={"scope": "all", "reason": "exchange incident"}, headers=admin
        )
        assert everything.json()["completed"] is True
        assert {r["bot_id"] for r in everything.json()["results"]} == {*alice_bots, bob_bot}
        assert seen[-1] == [bob_bot]  # alice's bots were halted already: nothing left to send for them
    for bot_id, headers in ((alice_bots[0], alice), (bob_bot, bob)):
        bot = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=headers)).json()
        assert (bot["desired_state"], bot["actual_state"]) == ("halted", "halted")
    audit = [(r.actor, r.target_id) for r in await management.audit("bot.emergency_stop")]
    assert audit == [("alice@example.com", "mine"), ("root@example.com", "all")]
    # Only a new start leaves "halted".
    restarted = await management.client.post(f"/api/v1/bots/{bob_bot}/start", headers=bob)
    assert restarted.json()["desired_state"] == "running"


async def test_all_needs_an_admin_token_with_the_admin_scope_and_a_refusal_is_audited(management: Management) -> None:
    admin = await session_of(management, "root@example.com", Role.admin)
    minted = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "trading-agent", "scopes": ["read", "trade"]}, headers=admin
    )
    assert minted.status_code == 201, minted.text
    agent = {"Authorization": f"Bearer {minted.json()['token']}"}

    refused = await management.client.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=agent)
    assert refused.status_code == 403, refused.text
    assert refused.json() == {
        "detail": "This personal access token lacks the 'admin' scope: halting the whole fleet needs it (use a token "
        "with it, or scope 'mine')."
    }
    mine = await management.client.post("/api/v1/emergency-stop", json={"scope": "mine"}, headers=agent)
    assert mine.status_code == 200, mine.text

    denied = [(e.actor, e.target_id, e.reason) for e in await management.audit("authz.denied")]
    assert denied == [
        (
            "root@example.com",
            "POST /api/v1/emergency-stop",
            "emergency stop of all bots by a token without the admin scope",
        )
    ]
    assert [e.target_id for e in await management.audit("bot.emergency_stop")] == ["mine"]
