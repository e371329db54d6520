"""The failover pass against the leases it reads in Redis (the moves themselves, with real gateways and bots:
tests/e2e/test_failover.py): only an ended lease moves a bot; a gateway without leases is never judged by them; a
bot whose trades are in SQLite can't move with them and reads ``lost``, saying why and what to do."""

from __future__ import annotations

import pytest

from management_server.bots.failover import Failover
from management_server.config import ManagementSettings
from shared.bus.leases import leases_key
from tests.management_server.bots.test_lifecycle import GATEWAY
from tests.management_server.bots.test_reconcile import bot_row, outbox, running_bot
from tests.management_server.conftest import Management


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    return management_settings.model_copy(update={"failover_interval": 3600.0})  # passes only when the test runs one


def failover(management: Management) -> Failover:
    found: Failover = management.app.state.failover
    return found


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
        (move,) = await failover(management).pass_once()
        assert (str(move.bot_id), move.from_gateway, move.to_gateway) == (bot_id, GATEWAY, None)
        bot = await bot_row(management, bot_id)
        assert bot.actual_state == "lost"
        assert bot.last_error is not None
        assert f"its lease on gateway {GATEWAY} ended" in bot.last_error
        assert "its trades are in SQLite on that host" in bot.last_error
        assert "freqfleet bots migrate-db" in bot.last_error
        assert await outbox(management) == commands  # nothing started anywhere
        assert await failover(management).pass_once() == []  # said once
    finally:
        await redis.delete(leases_key(GATEWAY))
