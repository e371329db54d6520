"""A gateway that stops leaves its bots trading and the next one adopts them (same process, no second
one); with ``stop_bots_on_shutdown`` (what ``freqfleet up`` sets) the bots stop with it and the next
gateway starts them again."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from shared.bus.messages import BotStarted, BotStatus, BotStopped, CommandAccepted, TradeOpened
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.trading_gateway.fleet.conftest import (
    Bus,
    Tokens,
    bearer,
    bots_root,
    running_gateway,
    settings_for,
    start,
)
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings

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

    async with running_gateway(settings):
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
        assert [(v["pid"], v["desired"]) for v in view] == [(again.data.pid, "running")]
    with capfd.disabled():
        print(f"\nsecond gateway up with its bot adopted in {adopted_in:.2f} s")
