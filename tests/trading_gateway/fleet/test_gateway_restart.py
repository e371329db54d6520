"""A gateway that stops leaves its bots trading and the next one adopts them (same process, no second
one; a bot started before the gateway had its market-data relay keeps asking the exchange itself until its next
start); with ``stop_bots_on_shutdown`` (what ``freqfleet up`` sets) the bots stop with it and the next
gateway starts them again. A RESTART_BOT accepted just before a gateway ends is done by the next one."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from shared.bus.messages import (
    BotStarted,
    BotStatus,
    BotStopped,
    CommandAccepted,
    RestartBot,
    RestartBotData,
    TradeOpened,
)
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import until
from tests.trading_gateway.conftest import (
    Bus,
    Tokens,
    bearer,
    bots_root,
    running_gateway,
    settings_for,
    start,
)
from trading_gateway.bots import STATE_FILE
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.bot import Actual
from trading_gateway.fleet.service import Fleet

pytestmark = pytest.mark.slow


async def test_a_new_gateway_adopts_the_running_bots_and_up_stops_them(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens)
    cleanup.append(settings)
    bus = bus_factory(settings.gateway_id)
    bot_id = uuid.uuid4()
    admin = bearer(tokens.mint("admin"))

    # The first gateway has no market-data relay (an older version): its bot asks the simulator itself.
    async with running_gateway(settings.model_copy(update={"relay": False})):
        assert isinstance(await bus.answer(await bus.send(start(bot_id, 1))), CommandAccepted)
        first = await bus.wait(BotStarted, bot_id=bot_id)
        await bus.wait(TradeOpened, bot_id=bot_id)
    # The gateway is gone; its bot is not.
    stopped_at = time.time()
    assert psutil.Process(first.data.pid).is_running()
    assert await bus.of(BotStopped, bot_id) == []

    t0 = time.monotonic()
    async with running_gateway(settings.model_copy(update={"stop_bots_on_shutdown": True})) as gw:
        adopted_in = time.monotonic() - t0
        view = (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"]
        assert [(v["bot_id"], v["pid"], v["actual"]) for v in view] == [(str(bot_id), first.data.pid, "running")]
        # Adopted by a gateway with the relay, it keeps the URL (and sandbox) it was started with until its next
        # start, and trades on.
        assert view[0]["market_data"] == "direct: started before the relay; relayed from its next start"
        await bus.wait(BotStatus, lambda e: e.occurred_at.timestamp() > stopped_at, bot_id=bot_id)
        starts = await bus.of(BotStarted, bot_id)
        # Re-announced with the first announcement's id: the management server's dedupe drops it.
        assert [(e.event_id, e.data.pid) for e in starts] == [(first.event_id, first.data.pid)] * 2
        assert [o.pid for o in find_orphans(bots_root(settings))] == [first.data.pid]  # no second process
        assert len(await bus.of(TradeOpened, bot_id)) == 1  # the open trade was reported once, not again
    # stop_bots_on_shutdown: stopped with the gateway, its desired state kept.
    stopped = await bus.wait(BotStopped, bot_id=bot_id, timeout=5)
    assert stopped.data.reason is not None
    assert "stop_bots_on_shutdown" in stopped.data.reason
    assert find_orphans(bots_root(settings)) == []

    async with running_gateway(settings) as gw:
        again = await bus.wait(BotStarted, lambda e: e.data.pid != first.data.pid, bot_id=bot_id)
        view = (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"]
        assert [(v["pid"], v["desired"], v["market_data"]) for v in view] == [(again.data.pid, "running", "relay")]
    with capfd.disabled():
        print(f"\nsecond gateway up with its bot adopted in {adopted_in:.2f} s")


async def test_a_restart_accepted_just_before_the_gateway_ends_is_done_by_the_next_one(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens)
    cleanup.append(settings)
    bus = bus_factory(settings.gateway_id)
    bot_id = uuid.uuid4()

    held: asyncio.Lock | None = None
    try:
        async with running_gateway(settings) as gw:
            assert isinstance(await bus.answer(await bus.send(start(bot_id, 1))), CommandAccepted)
            first = await bus.wait(BotStarted, bot_id=bot_id)
            fleet: Fleet = gw.app.state.fleet
            bot = fleet.bots[str(bot_id)]
            # Hold the supervisor in the window between the ack and the restart: it needs the bot's lock to stop
            # the process, and gets it only after the gateway has ended (its task cancelled meanwhile).
            held = bot.lock
            await held.acquire()
            restart = RestartBot(source="management", data=RestartBotData(bot_id=bot_id, generation=2))
            assert isinstance(await bus.answer(await bus.send(restart)), CommandAccepted)
            await until(lambda: bot.actual is Actual.stopping, timeout=10, what="the supervisor to start the restart")
    finally:
        if held is not None:
            held.release()
    # The gateway ended (as if it had crashed: its bot left running) before the restart was done.
    assert psutil.Process(first.data.pid).is_running()
    assert await bus.of(BotStopped, bot_id) == []
    records = json.loads((settings.gateway_data_dir / STATE_FILE).read_text())["bots"]
    assert [(r["pid"], r["restart_pending"]) for r in records] == [(first.data.pid, True)]

    async with running_gateway(settings):
        stopped = await bus.wait(BotStopped, bot_id=bot_id)
        assert stopped.data.reason == "restart requested"
        again = await bus.wait(BotStarted, lambda e: e.data.pid != first.data.pid, bot_id=bot_id)
        assert again.data.generation == 2
        assert not psutil.pid_exists(first.data.pid) or psutil.Process(first.data.pid).status() == psutil.STATUS_ZOMBIE
        assert [o.pid for o in find_orphans(bots_root(settings))] == [again.data.pid]
        records = json.loads((settings.gateway_data_dir / STATE_FILE).read_text())["bots"]
        assert [(r["pid"], r["restart_pending"]) for r in records] == [(again.data.pid, False)]
