"""One bot through the gateway, driven over the bus like the management server drives it: start, status
with trades, pause, resume, force exit, config reload in the same process, stop, stale commands, and
the REST view with its access rules."""

from __future__ import annotations

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
    CommandRejected,
    GatewayHeartbeat,
    RestartBot,
    RestartBotData,
    TradeClosed,
    TradeOpened,
)
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from tests.trading_gateway.conftest import (
    Bus,
    Tokens,
    bearer,
    bots_root,
    db_trades,
    force_exit,
    pause,
    resume,
    running_gateway,
    settings_for,
    spec_for,
    start,
    stop,
    update_config,
)
from tests.trading_gateway.fleet.test_monitoring import samples, value
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.trades import trade_event_id

pytestmark = pytest.mark.slow


async def test_a_bot_driven_over_the_bus(
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
    # Two pairs, one trade at a time: UPDATE_CONFIG raises that to two later.
    spec = spec_for(("BTC/USDT", "ETH/USDT"), max_open_trades=1)
    t0 = time.monotonic()
    async with running_gateway(settings) as gw:
        # Access rules of the REST view: no token, a user's token, an admin's.
        assert (await gw.http.get("/api/v1/bots")).status_code == 401
        denied = await gw.http.get("/api/v1/bots", headers=bearer(tokens.mint("user")))
        assert denied.status_code == 403
        assert denied.json() == {"detail": "Only an admin or a service account may do this."}
        garbage = await gw.http.get("/api/v1/bots", headers=bearer("not.a.token"))
        assert garbage.status_code == 401
        assert garbage.headers["www-authenticate"] == "Bearer"
        admin = bearer(tokens.mint("admin"))
        assert (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"] == []

        # START_BOT → COMMAND_ACCEPTED, BOT_STARTED, BOT_STATUS with an open trade, TRADE_OPENED.
        command = await bus.send(start(bot_id, 3, spec))
        answer = await bus.answer(command)
        assert isinstance(answer, CommandAccepted), answer
        assert (answer.data.bot_id, answer.data.command_type) == (bot_id, "START_BOT")
        assert answer.correlation_id == command.correlation_id
        started = await bus.wait(BotStarted, bot_id=bot_id)
        to_started = time.monotonic() - t0
        assert (started.data.generation, started.data.freqtrade_version) == (3, "2026.9")
        assert started.correlation_id == command.correlation_id
        pid = started.data.pid
        assert psutil.Process(pid).is_running()
        assert settings.bot_port_range_start <= started.data.port <= settings.bot_port_range_end
        status = await bus.wait(BotStatus, lambda e: len(e.data.open_trades) == 1, bot_id=bot_id)
        to_trade = time.monotonic() - t0
        assert status.data.state == "running"
        assert status.data.open_trades[0]["pair"] in ("BTC/USDT", "ETH/USDT")
        assert "profit_all_coin" in status.data.profit
        assert status.data.last_process_at is not None
        first_trade = int(status.data.open_trades[0]["trade_id"])
        opened = await bus.wait(TradeOpened, bot_id=bot_id)
        assert opened.data.trade_id == first_trade
        assert opened.event_id == trade_event_id(bot_id, first_trade, "opened")  # what a re-send would carry

        listed = (await gw.http.get("/api/v1/bots", headers=admin)).json()
        assert listed["gateway_id"] == settings.gateway_id
        [view] = listed["bots"]
        assert (view["bot_id"], view["pid"], view["port"]) == (str(bot_id), pid, started.data.port)
        assert (view["desired"], view["actual"], view["generation"]) == ("running", "running", 3)
        assert view["crash_count"] == 0
        assert view["last_status_age_seconds"] is not None
        assert view["last_status_age_seconds"] < 5
        beat = await bus.wait(GatewayHeartbeat, lambda e: e.data.bots_by_state.get("running") == 1)
        assert (beat.data.bots_running, beat.data.capacity) == (1, settings.max_bots - 1)
        assert sum(beat.data.bots_by_state.values()) == 1
        assert beat.data.cpu_percent is not None
        assert beat.data.memory_used_bytes is not None
        # Its market data came through the gateway's relay, whose numbers (read every second) the gateway shows, its
        # heartbeat reports and its /metrics exposes.
        assert view["market_data"] == "relay"

        async def relayed() -> dict[str, float] | None:
            numbers: dict[str, float] | None = (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"][0][
                "relay"
            ]
            return numbers if numbers and numbers["requests"] > 0 else None

        await async_wait_for(relayed, timeout=10, what="the bot's numbers at the relay")
        await bus.wait(
            GatewayHeartbeat,
            lambda e: bool(e.data.relay and e.data.relay["exchanges"]["simulator"]["upstream_requests"] > 0),
            what="a heartbeat with the relay's numbers",
        )
        found = await samples(gw)  # and the gateway's /metrics, per exchange and per bot
        assert value(found, "freqfleet_gateway_relay_upstream_requests_total", exchange="simulator") > 0
        assert (
            value(found, "freqfleet_gateway_relay_requests_total", bot_id=str(bot_id), outcome="hits")
            + value(found, "freqfleet_gateway_relay_requests_total", bot_id=str(bot_id), outcome="misses")
            > 0
        )

        # UPDATE_CONFIG: two trades at a time, applied by reload_config in the same process.
        t_update = time.time()
        bigger = spec.model_copy(update={"max_open_trades": 2})
        assert isinstance(await bus.answer(await bus.send(update_config(bot_id, 4, bigger))), CommandAccepted)
        await bus.wait(
            BotStatus,
            lambda e: len(e.data.open_trades) == 2 and e.occurred_at.timestamp() > t_update,
            bot_id=bot_id,
            what="two open trades after the config update",
        )
        to_reloaded = time.time() - t_update
        assert psutil.Process(pid).is_running()
        assert [e.data.pid for e in await bus.of(BotStarted, bot_id)] == [pid]  # no restart
        assert '"max_open_trades": 2' in (bots_root(settings) / str(bot_id) / "config.json").read_text()

        # PAUSE and RESUME show in Freqtrade's state.
        t_pause = time.time()
        assert isinstance(await bus.answer(await bus.send(pause(bot_id, 5))), CommandAccepted)
        await bus.wait(
            BotStatus, lambda e: e.data.state == "paused" and e.occurred_at.timestamp() > t_pause, bot_id=bot_id
        )
        assert (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"][0]["actual"] == "paused"
        await bus.wait(
            GatewayHeartbeat,
            lambda e: e.data.bots_by_state.get("paused") == 1 and e.occurred_at.timestamp() > t_pause,
            what="a heartbeat counting the bot as paused",
        )
        # No heartbeat says the bot ran after the gateway had acted on its PAUSE (generation 5).
        for beat in await bus.of(GatewayHeartbeat):
            for item in beat.data.inventory or []:
                if item.generation == 5 and item.settled:
                    assert item.actual == "paused", beat
        t_resume = time.time()
        assert isinstance(await bus.answer(await bus.send(resume(bot_id, 6))), CommandAccepted)
        await bus.wait(
            BotStatus, lambda e: e.data.state == "running" and e.occurred_at.timestamp() > t_resume, bot_id=bot_id
        )

        # FORCE_EXIT of the open trade → TRADE_CLOSED; an unknown trade is refused with the bot's reason.
        assert isinstance(await bus.answer(await bus.send(force_exit(bot_id, 6, first_trade))), CommandAccepted)
        closed = await bus.wait(TradeClosed, bot_id=bot_id)
        assert (closed.data.trade_id, closed.data.exit_reason) == (first_trade, "force_exit")
        after_exit = await bus.wait(BotStatus, lambda e: e.occurred_at > closed.occurred_at, bot_id=bot_id)
        assert first_trade not in [t["trade_id"] for t in after_exit.data.open_trades]
        assert closed.event_id == trade_event_id(bot_id, first_trade, "closed")
        refused = await bus.answer(await bus.send(force_exit(bot_id, 6, 999)))
        assert isinstance(refused, CommandRejected)
        assert "refused to exit trade 999" in refused.data.reason

        # RESTART_BOT: a new process, the same bot (its open trades come back from its database).
        restart = RestartBot(source="management", data=RestartBotData(bot_id=bot_id, generation=7))
        assert isinstance(await bus.answer(await bus.send(restart)), CommandAccepted)
        await bus.wait(BotStopped, lambda e: e.data.reason == "restart requested", bot_id=bot_id)
        restarted = await bus.wait(BotStarted, lambda e: e.data.pid != pid, bot_id=bot_id)
        assert restarted.data.generation == 7
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        pid = restarted.data.pid
        await bus.wait(BotStatus, lambda e: e.occurred_at > restarted.occurred_at and e.data.open_trades, bot_id=bot_id)

        # STOP_BOT → BOT_STOPPED, the process is gone, its trades are in its database.
        t_stop = time.monotonic()
        assert isinstance(await bus.answer(await bus.send(stop(bot_id, 8))), CommandAccepted)
        stopped = await bus.wait(BotStopped, lambda e: e.data.generation == 8, bot_id=bot_id)
        to_stopped = time.monotonic() - t_stop
        assert stopped.data.reason == "test stop"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert find_orphans(bots_root(settings)) == []
        rows = db_trades(bots_root(settings) / str(bot_id) / "tradesv3.sqlite")
        assert (first_trade, 0, "force_exit") in [(r[0], r[2], r[3]) for r in rows]
        assert sum(1 for r in rows if r[2] == 1) >= 1  # the open ones stay for the next start
        [view] = (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"]
        assert (view["desired"], view["actual"], view["pid"]) == ("stopped", "stopped", None)

        # A command older than what was applied is answered, not applied: nothing starts.
        stale = await bus.answer(await bus.send(start(bot_id, 7, spec)))
        assert isinstance(stale, CommandRejected)
        assert "stale: generation 7" in stale.data.reason
        assert "older than generation 8" in stale.data.reason
        heartbeats = len(await bus.of(GatewayHeartbeat))
        await async_wait_for(
            lambda: _more_heartbeats(bus, heartbeats + 2), timeout=10, what="two more heartbeats after the stale start"
        )
        assert len(await bus.of(BotStarted, bot_id)) == 2
        assert find_orphans(bots_root(settings)) == []

        # No secret of the bot in any event or answer.
        password = _bot_password(bots_root(settings) / str(bot_id) / "config.json")
        everything = " ".join(e.model_dump_json() for e in await bus.events())
        everything += (await gw.http.get("/api/v1/bots", headers=admin)).text
        assert password not in everything
    out, err = capfd.readouterr()
    assert password not in out + err
    with capfd.disabled():
        print(
            f"\nSTART_BOT to BOT_STARTED {to_started:.2f} s, to the first open trade {to_trade:.2f} s; "
            f"UPDATE_CONFIG to the second trade {to_reloaded:.2f} s; STOP_BOT to BOT_STOPPED {to_stopped:.2f} s"
        )


async def _more_heartbeats(bus: Bus, count: int) -> bool:
    return len(await bus.of(GatewayHeartbeat)) >= count


def _bot_password(config: Path) -> str:
    import json

    password: str = json.loads(config.read_text())["api_server"]["password"]
    assert len(password) > 20
    return password
