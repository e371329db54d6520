"""The failover pass against the leases it reads in Redis (the moves themselves, with real gateways and bots:
tests/e2e/test_failover.py): only an ended lease moves a bot; a gateway without leases is never judged by them; a
bot whose trades are in SQLite can't move with them and reads ``lost``, saying why and what to do; a bot pinned to
its gateway (an admin's choice) starts there, and is ``orphaned``, not moved."""

from __future__ import annotations

import pytest

from management_server.bots.failover import Failover
from management_server.config import ManagementSettings
from management_server.users.models import Role
from shared.bus.leases import leases_key
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.bots.test_lifecycle import GATEWAY, admin_bot, heartbeat
from tests.management_server.bots.test_reconcile import bot_row, outbox, running_bot, set_bot
from tests.management_server.conftest import Management


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    return management_settings.model_copy(update={"failover_interval": 3600.0})  # passes only when the test runs one


def failover(management: Management) -> Failover:
    found: Failover = management.app.state.failover
    return found


async def stays(management: Management, bot_id: str, gateway_id: str, state: str, *words: str) -> None:
    """One failover pass: the bot is not moved off ``gateway_id`` but reads ``state``, with ``words`` in its error."""
    (move,) = await failover(management).pass_once()
    assert (str(move.bot_id), move.from_gateway, move.to_gateway) == (bot_id, gateway_id, None)
    bot = await bot_row(management, bot_id)
    assert bot.actual_state == state
    assert bot.last_error is not None
    for said in words:
        assert said in bot.last_error


async def test_an_ended_lease_and_nothing_else_moves_a_bot(management: Management) -> None:
    _, bot_id = await running_bot(management)
    redis = management.app.state.redis
    commands = await outbox(management)
    try:
        assert await failover(management).pass_once() == []  # no leases on this gateway: never judged by them

        now_ms = int((await redis.time())[0]) * 1000
        await redis.hset(leases_key(GATEWAY), bot_id, f"1 {now_ms + 60_000}")
        assert await failover(management).pass_once() == []  # held
        assert (await bot_row(management, bot_id)).actual_state == "running"

        await redis.hset(leases_key(GATEWAY), bot_id, f"1 {now_ms - 1_000}")
        await stays(
            management,
            bot_id,
            GATEWAY,
            "lost",
            f"its lease on gateway {GATEWAY} ended",
            "its trades are in SQLite on that host",
            "freqfleet bots migrate-db",
        )
        assert await outbox(management) == commands  # nothing started anywhere
        assert await failover(management).pass_once() == []  # said once
    finally:
        await redis.delete(leases_key(GATEWAY))


PINNED_HERE = "gw-zz-pinned"  # after GATEWAY in the placement order: only a pin puts a bot there


async def test_a_pinned_bot_starts_on_its_gateway_and_is_orphaned_not_moved(management: Management) -> None:
    admin, bot_id = await admin_bot(management)
    user = await session_of(management, "plain@example.com")
    await heartbeat(management)
    await heartbeat(management, PINNED_HERE)
    pin = {"placement": {"gateway_id": PINNED_HERE}}

    # An admin's choice, of an enrolled gateway.
    strategy = (await upload(management, user)).json()["id"]
    refused = await management.client.post("/api/v1/bots", json=bot_body(strategy) | pin, headers=user)
    assert refused.status_code == 403, refused.text
    assert "Only an admin may pin a bot" in refused.json()["detail"]
    unknown = await management.client.patch(
        f"/api/v1/bots/{bot_id}", json={"placement": {"gateway_id": "gw-nowhere"}}, headers=admin
    )
    assert unknown.status_code == 404, unknown.text
    assert "No enrolled gateway gw-nowhere" in unknown.json()["detail"]
    pinned = await management.client.patch(f"/api/v1/bots/{bot_id}", json=pin, headers=admin)
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["placement"] == {"gateway_id": PINNED_HERE}

    # It starts there, though GATEWAY comes first for a bot that is not pinned.
    started = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    assert started.json()["gateway_id"] == PINNED_HERE
    commands = await outbox(management, PINNED_HERE)
    assert commands == ["START_BOT"]
    await set_bot(management, bot_id, actual_state="running", trade_db="postgres")

    # Its lease there ends: not moved, orphaned, said once.
    redis = management.app.state.redis
    now_ms = int((await redis.time())[0]) * 1000
    await redis.hset(leases_key(PINNED_HERE), bot_id, f"1 {now_ms - 1_000}")
    try:
        await stays(
            management,
            bot_id,
            PINNED_HERE,
            "orphaned",
            f"it is pinned to gateway {PINNED_HERE}, so it is not moved",
            "placement: null",
        )
        assert await failover(management).pass_once() == []
        assert await outbox(management) == []
        assert await outbox(management, PINNED_HERE) == commands
    finally:
        await redis.delete(leases_key(PINNED_HERE))

    # Unpinning is an admin's too.
    forbidden = await management.client.patch(f"/api/v1/bots/{bot_id}", json={"placement": None}, headers=user)
    assert forbidden.status_code == 404  # not the user's bot: as if it did not exist
    unpinned = await management.client.patch(f"/api/v1/bots/{bot_id}", json={"placement": None}, headers=admin)
    assert unpinned.status_code == 200, unpinned.text
    assert unpinned.json()["placement"] is None


async def test_a_burst_of_starts_is_spread_over_the_gateways_before_their_heartbeats_count_it(
    management: Management,
) -> None:
    """Free capacity comes from heartbeats (every 5 s): the starts placed on a gateway since its last one count too,
    so a burst (a failover of many bots) does not all go to the gateway that had the most room."""
    await heartbeat(management)
    await heartbeat(management, PINNED_HERE)  # the same room as GATEWAY, which comes first on a tie
    admin = await session_of(management, "burst@example.com", Role.admin)
    strategy = (await upload(management, admin)).json()["id"]
    placed = []
    for n in range(4):
        created = await management.client.post(
            "/api/v1/bots", json=bot_body(strategy, name=f"burst-{n}"), headers=admin
        )
        assert created.status_code == 201, created.text
        started = await management.client.post(f"/api/v1/bots/{created.json()['id']}/start", headers=admin)
        assert started.status_code == 200, started.text
        placed.append(started.json()["gateway_id"])
    assert placed == [GATEWAY, PINNED_HERE, GATEWAY, PINNED_HERE]
