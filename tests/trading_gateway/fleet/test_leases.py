"""A gateway's leases on its bots (FREQFLEET_LEASE_SECONDS), on a real Valkey with the gateway's own ACL user: a bot
runs only while its gateway renews its lease; a gateway cut off from Redis stops it before the lease ends and starts
it again once a renewal says it still holds it; a bot the management server placed elsewhere is stopped and never
started here again. The bot is a stand-in for Freqtrade (what is tested is the gateway), run through the sandbox."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from freqfleet.embedded import EmbeddedValkey, restricted_user
from shared.bus.leases import leases_of, set_holder
from shared.bus.publisher import Publisher
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from tests.trading_gateway.conftest import Tokens, bots_root, settings_for, spec_for
from tests.trading_gateway.fleet.test_slow_status import STUCK_STATUS
from trading_gateway.bus.events import EventPublisher
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.bot import Actual, Desired
from trading_gateway.fleet.service import Fleet
from trading_gateway.redis_acl import acl_rules, acl_user

pytestmark = pytest.mark.slow

# The stand-in answers every status read at once (no trade to price).
STAND_IN = STUCK_STATUS.replace("time.sleep(3600)", "path = '/api/v1/status-ok'").replace(
    '"/api/v1/profit": {{}},', '"/api/v1/profit": {{}}, "/api/v1/status-ok": [],'
)


async def test_no_lease_no_bot(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    valkey: EmbeddedValkey,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens, lease_seconds=3.0, relay=False)
    cleanup.append(settings)
    gateway = settings.gateway_id
    bot_id = uuid.uuid4()
    folder = bots_root(settings) / str(bot_id)
    folder.mkdir(parents=True)
    program = folder / "stand-in-freqtrade"
    program.write_text(STAND_IN.format(python=sys.executable))
    program.chmod(0o755)

    admin = aioredis.Redis.from_url(redis_url)
    user = acl_user(gateway)
    own = aioredis.Redis.from_url(restricted_user(redis_url, user, acl_rules(gateway)))  # the gateway's Valkey user
    events = EventPublisher(Publisher(admin), tmp_path / "outbox.jsonl")
    fleet = Fleet(settings, events, executable=program)
    keeper = fleet.use_leases(own)
    await fleet.start()
    keeper.start()
    try:
        await set_holder(admin, bot_id, gateway, 1)  # what the management server's relay does with a START_BOT
        await fleet.start_bot(bot_id, 1, spec_for())
        bot = fleet.bots[str(bot_id)]
        await async_wait_for(lambda: _actual(fleet, bot_id, Actual.running), timeout=60, what="the bot to run")
        first = bot.process
        assert first is not None
        held = await leases_of(admin, gateway)
        assert held.alive(str(bot_id))
        assert held.held[str(bot_id)].generation == 1

        # Cut off from Redis: no renewal goes through, and the gateway stops the bot before the lease ends (3 s).
        await admin.execute_command("ACL", "SETUSER", user, "off")
        await admin.execute_command("CLIENT", "KILL", "USER", user)
        await async_wait_for(lambda: _stopped(fleet, bot_id), timeout=10, what="the bot stopped by its fenced gateway")
        assert not first.is_alive()
        assert bot.desired is Desired.running  # still meant to run here: only not without a lease
        await async_wait_for(
            lambda: _error(fleet, bot_id, "its lease can't be renewed"), timeout=10, what="no start without a lease"
        )
        assert bot.process is None

        # Back: a renewal says it still holds the bot, which starts again.
        await admin.execute_command("ACL", "SETUSER", user, "on")
        await async_wait_for(lambda: _actual(fleet, bot_id, Actual.running), timeout=60, what="the bot back")
        second = bot.process
        assert second is not None
        assert second.pid != first.pid

        # Placed on another gateway by the management server: stopped here, and never started here again.
        await set_holder(admin, bot_id, "gw-elsewhere", 7)
        await async_wait_for(lambda: _stopped(fleet, bot_id), timeout=10, what="the bot stopped: held elsewhere")
        assert bot.desired is Desired.stopped
        assert bot.stop_reason is not None
        assert "gw-elsewhere holds it now" in bot.stop_reason
        assert str(bot_id) not in (await leases_of(admin, gateway)).held
        await fleet.start_bot(bot_id, 8, spec_for())  # a start that reaches this gateway anyway: its lease refuses it
        with pytest.raises(AssertionError):
            await async_wait_for(lambda: _actual(fleet, bot_id, Actual.running), timeout=3, what="a start")
        assert bot.process is None
        assert "not started: gateway gw-elsewhere holds it since generation 7" in (bot.last_error or "")

        # Placed here again: it starts.
        await set_holder(admin, bot_id, gateway, 9)
        await async_wait_for(lambda: _actual(fleet, bot_id, Actual.running), timeout=60, what="the bot back here")

        # A gateway that stops its bots on purpose (its shutdown under `up`) gives its leases up: nothing is left to
        # expire, so nothing is failed over.
        await keeper.stop()
        await fleet.stop(stop_bots=True)
        await keeper.release()
        assert (await leases_of(admin, gateway)).held == {}
    finally:
        await keeper.stop()
        await fleet.stop(stop_bots=True)
        await events.stop()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()
        await own.aclose()


async def _actual(fleet: Fleet, bot_id: uuid.UUID, actual: Actual) -> bool:
    bot = fleet.bots[str(bot_id)]
    return bot.actual is actual and bot.process is not None


async def _stopped(fleet: Fleet, bot_id: uuid.UUID) -> bool:
    return fleet.bots[str(bot_id)].process is None


async def _error(fleet: Fleet, bot_id: uuid.UUID, text: str) -> bool:
    return text in (fleet.bots[str(bot_id)].last_error or "")
