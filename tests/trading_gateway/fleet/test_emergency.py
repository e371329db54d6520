"""Emergency stop: the local kill switch with Redis down (outcomes answered at once, events sent once
Redis is back), halted bots staying down until a newer START, and EMERGENCY_STOP over the bus."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psutil
import pytest

from freqfleet.embedded import EmbeddedValkey
from shared.bus.messages import (
    BotRef,
    BotStarted,
    BotStatus,
    CommandAccepted,
    CommandRejected,
    EmergencyScope,
    EmergencyStopCompleted,
    EmergencyStopData,
    GatewayHeartbeat,
    TradeClosed,
    TradeOpened,
)
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, free_port, serve, until
from tests.trading_gateway.fleet.conftest import (
    Bus,
    Tokens,
    bearer,
    bots_root,
    db_trades,
    emergency,
    jwks_app,
    new_keys,
    running_gateway,
    settings_for,
    spec_for,
    start,
)
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.events import OUTBOX_FILE

PAIRS = ("BTC/USDT", "ETH/USDT")


@pytest.mark.slow
async def test_emergency_stop_without_redis_then_over_the_bus(
    simulator: SimulatorProcess,
    tokens: Tokens,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    capfd: pytest.CaptureFixture[str],
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", free_port())
    valkey.start()
    settings = settings_for(tmp_path, valkey.url, simulator, tokens)
    cleanup.append(settings)
    bus = Bus(valkey.url, settings.gateway_id)
    bots = [uuid.uuid4(), uuid.uuid4()]
    spec = spec_for(PAIRS)
    outbox = settings.gateway_data_dir / OUTBOX_FILE
    try:
        async with running_gateway(settings) as gw:
            for bot_id in bots:
                assert isinstance(await bus.answer(await bus.send(start(bot_id, 1, spec))), CommandAccepted)
            for bot_id in bots:  # entries filled: forceexit deletes a trade whose entry has not filled
                await async_wait_for(
                    lambda b=bot_id: _opened(bus, b, 2), timeout=60, what=f"two filled trades of bot {bot_id}"
                )
            pids = [(await bus.wait(BotStarted, bot_id=b)).data.pid for b in bots]

            valkey.stop()
            admin = bearer(tokens.mint("admin"))
            # Without Redis a token's revocation can't be checked: reads are refused ...
            listing = await gw.http.get("/api/v1/bots", headers=admin)
            assert listing.status_code == 503
            assert "Redis is unavailable" in listing.json()["detail"]
            # ... and the kill switch still refuses whoever may not use it, and works for whoever may.
            body = {"scope": "all"}
            assert (await gw.http.post("/api/v1/emergency-stop", json=body)).status_code == 401
            read_only = await gw.http.post("/api/v1/emergency-stop", json=body, headers=bearer(tokens.mint("service")))
            assert read_only.status_code == 403
            assert read_only.json() == {"detail": "This token lacks the 'trade' scope."}
            bad_body = await gw.http.post("/api/v1/emergency-stop", json={"scope": "all", "bot_ids": []}, headers=admin)
            assert bad_body.status_code == 422
            t0 = time.monotonic()
            response = await gw.http.post("/api/v1/emergency-stop", json=body, headers=admin)
            seconds = time.monotonic() - t0
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["gateway_id"] == settings.gateway_id
            outcomes = {r["bot_id"]: r for r in result["results"]}
            assert set(outcomes) == {str(b) for b in bots}
            for outcome in outcomes.values():
                assert (outcome["outcome"], outcome["trades_closed"], outcome["trades_left_open"]) == ("halted", 2, 0)
            assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)
            assert find_orphans(bots_root(settings)) == []
            for bot_id in bots:
                rows = db_trades(bots_root(settings) / str(bot_id) / "tradesv3.sqlite")
                assert [(is_open, reason) for _, _, is_open, reason in rows] == [(0, "force_exit")] * 2

            # The completion (and the trades it closed) wait in the outbox, in order.
            queued = [json.loads(line)["type"] for line in outbox.read_text().splitlines()]
            assert queued.count("TRADE_CLOSED") == 4
            assert queued[-1] == "EMERGENCY_STOP_COMPLETED"

            valkey.start()
            completed = await bus.wait(EmergencyStopCompleted, timeout=30)
            assert completed.data.command_id is None
            assert {(str(r.bot_id), r.outcome, r.trades_closed) for r in completed.data.results} == {
                (str(b), "halted", 2) for b in bots
            }
            await until(lambda: not outbox.exists(), timeout=10, what="the outbox to be flushed")
            closed = await bus.of(TradeClosed)
            assert sorted((str(e.data.bot_id), e.data.exit_reason) for e in closed) == sorted(
                [(str(b), "force_exit") for b in bots] * 2
            )

            # Halted bots stay down (heartbeats go on, no start) until a newer START.
            beats = len(await bus.of(GatewayHeartbeat))
            await async_wait_for(lambda: _beats(bus, beats + 3), timeout=15, what="three more heartbeats")
            assert len(await bus.of(BotStarted)) == 2
            views = (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"]
            assert {(v["desired"], v["actual"], v["pid"]) for v in views} == {("halted", "halted", None)}

            # EMERGENCY_STOP over the bus: a START brings one bot back, the bus halts it again, and a
            # command older than the emergency's generation can't undo that.
            again = bots[0]
            assert isinstance(await bus.answer(await bus.send(start(again, 2, spec))), CommandAccepted)
            restarted = await bus.wait(BotStarted, lambda e: e.data.generation == 2, bot_id=again)
            await bus.wait(BotStatus, lambda e: e.occurred_at > restarted.occurred_at, bot_id=again)
            halt = await bus.send(
                emergency(
                    EmergencyStopData(
                        scope=EmergencyScope.bots, bots=[BotRef(bot_id=again, generation=4)], requested_by="admin@x"
                    )
                )
            )
            assert isinstance(await bus.answer(halt), CommandAccepted)
            by_bus = await bus.wait(EmergencyStopCompleted, lambda e: e.data.command_id == halt.event_id)
            assert [(r.bot_id, r.outcome) for r in by_bus.data.results] == [(again, "halted")]
            assert find_orphans(bots_root(settings)) == []
            stale = await bus.answer(await bus.send(start(again, 3, spec)))
            assert isinstance(stale, CommandRejected)
            assert "older than generation 4" in stale.data.reason
    finally:
        await bus.aclose()
        valkey.stop()
    with capfd.disabled():
        print(f"\nlocal emergency stop of 2 bots with 2 trades each, Redis down: answered in {seconds:.2f} s")


async def _opened(bus: Bus, bot_id: uuid.UUID, count: int) -> bool:
    return len(await bus.of(TradeOpened, bot_id)) >= count


async def _beats(bus: Bus, count: int) -> bool:
    return len(await bus.of(GatewayHeartbeat)) >= count


async def test_the_kill_switch_keeps_the_keys_for_when_the_management_server_is_down(
    simulator: SimulatorProcess, redis_url: str, tmp_path: Path
) -> None:
    keys = new_keys()
    async with serve(jwks_app(keys)) as jwks_url:
        settings = settings_for(tmp_path, redis_url, simulator, Tokens(keys, jwks_url))
        async with running_gateway(settings):
            await until(lambda: (settings.gateway_data_dir / "jwks.json").exists(), timeout=10, what="the JWKS copy")
    # The management server is gone; a new gateway starts from the copy.
    async with running_gateway(settings) as gw:
        admin = bearer(Tokens(keys, jwks_url).mint("admin"))
        answer = await gw.http.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"] == []
        stranger = bearer(Tokens(new_keys(), jwks_url).mint("admin"))  # signed by a key it never published
        refused = await gw.http.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=stranger)
        assert refused.status_code == 401
