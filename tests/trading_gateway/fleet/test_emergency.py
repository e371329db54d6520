"""Emergency stop of 5 running bots with open trades, all on one gateway: EMERGENCY_STOP over the bus
(each bot paused, its trades closed, its process gone, each outcome in EMERGENCY_STOP_COMPLETED; halted
bots stay down until a newer START), and the same with Redis frozen (SIGSTOP: a partition) through the local
kill switch (outcomes answered without waiting for Redis, events sent once Redis is back)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from freqfleet.embedded import EmbeddedValkey
from shared.bus.messages import (
    BotRef,
    BotStarted,
    BotStopped,
    CommandAccepted,
    CommandRejected,
    EmergencyOutcome,
    EmergencyScope,
    EmergencyStopCompleted,
    EmergencyStopData,
    Envelope,
    GatewayHeartbeat,
    TradeClosed,
    TradeOpened,
)
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, free_port, serve, until
from tests.trading_gateway.conftest import (
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
from trading_gateway.bus.events import OUTBOX_FILE
from trading_gateway.config import GatewaySettings

E = TypeVar("E", bound=Envelope)
PAIRS = ("BTC/USDT", "ETH/USDT")
BOTS = 5


async def _bots_with_open_trades(bus: Bus, count: int = BOTS) -> dict[uuid.UUID, int]:
    """``count`` bots started at once on the bus's gateway, each with a filled trade per pair; their pids."""
    spec = spec_for(PAIRS)
    bots = [uuid.uuid4() for _ in range(count)]
    commands = [await bus.send(start(bot_id, 1, spec)) for bot_id in bots]  # all queued: started concurrently
    for command in commands:
        assert isinstance(await bus.answer(command), CommandAccepted)
    # Entries filled: forceexit deletes a trade whose entry has not filled (TRADE_OPENED waits for the fill).
    await asyncio.gather(
        *(
            async_wait_for(lambda b=b: _opened(bus, b, len(PAIRS)), timeout=120, what=f"two filled trades of bot {b}")
            for b in bots
        )
    )
    return {b: (await bus.wait(BotStarted, bot_id=b)).data.pid for b in bots}


def _assert_all_halted(
    outcomes: Sequence[EmergencyOutcome], pids: dict[uuid.UUID, int], settings: GatewaySettings
) -> None:
    """Each bot: paused first, every trade closed, its process gone (none left under the bots folder)."""
    assert sorted(o.bot_id for o in outcomes) == sorted(pids)
    for o in outcomes:
        assert (o.outcome, o.trades_closed, o.trades_left_open, o.detail) == ("halted", len(PAIRS), 0, None), o
        assert o.paused_after_seconds is not None, f"bot {o.bot_id} did not accept stopentry"
        assert o.exited_after_seconds is not None
        assert o.paused_after_seconds <= o.exited_after_seconds
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids.values())
    assert find_orphans(bots_root(settings)) == []
    for bot_id in pids:
        rows = db_trades(bots_root(settings) / str(bot_id) / "tradesv3.sqlite")
        assert [(is_open, reason) for _, _, is_open, reason in rows] == [(0, "force_exit")] * len(PAIRS)


@pytest.mark.slow
async def test_emergency_stop_of_five_bots_over_the_bus(
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
    async with running_gateway(settings) as gw:
        pids = await _bots_with_open_trades(bus)
        halt = await bus.send(
            emergency(
                EmergencyStopData(
                    scope=EmergencyScope.bots,
                    bots=[BotRef(bot_id=b, generation=2) for b in pids],
                    requested_by="admin@example.com",
                    reason="test",
                )
            )
        )
        assert isinstance(await bus.answer(halt), CommandAccepted)
        completed = await bus.wait(EmergencyStopCompleted, lambda e: e.data.command_id == halt.event_id, timeout=60)
        data = completed.data
        assert data.gateway_id == settings.gateway_id
        _assert_all_halted(data.results, pids, settings)
        assert data.seconds_to_all_paused is not None
        assert data.seconds_to_all_exited is not None
        assert data.seconds_to_all_paused <= data.seconds_to_all_exited <= data.seconds
        closed = await async_wait_for(
            lambda: _closed(bus, BOTS * len(PAIRS)), timeout=30, what="a TRADE_CLOSED per trade"
        )
        assert sorted((e.data.bot_id, e.data.exit_reason) for e in closed) == sorted(
            [(b, "force_exit") for b in pids] * len(PAIRS)
        )
        assert len({(e.data.bot_id, e.data.trade_id) for e in closed}) == BOTS * len(PAIRS)
        assert await bus.of(BotStopped) == []  # no supervisor came back to stop them a second time

        # Halted bots stay down (heartbeats go on and count them halted, no start) until a newer START.
        beat = await bus.wait(
            GatewayHeartbeat, lambda e: e.occurred_at > completed.occurred_at and e.data.bots_by_state["halted"] == BOTS
        )
        await async_wait_for(lambda: _beats_after(bus, beat, 2), timeout=15, what="two more heartbeats")
        assert len(await bus.of(BotStarted)) == BOTS
        views = (await gw.http.get("/api/v1/bots", headers=bearer(tokens.mint("admin")))).json()["bots"]
        assert {(v["desired"], v["actual"], v["pid"]) for v in views} == {("halted", "halted", None)}
        # A command older than the emergency's generation can't undo it; a newer START can.
        again = next(iter(pids))
        stale = await bus.answer(await bus.send(start(again, 1, spec_for(PAIRS))))
        assert isinstance(stale, CommandRejected)
        assert "older than generation 2" in stale.data.reason
        assert isinstance(await bus.answer(await bus.send(start(again, 3, spec_for(PAIRS)))), CommandAccepted)
        restarted = await bus.wait(BotStarted, lambda e: e.data.generation == 3, bot_id=again)
        assert restarted.data.pid != pids[again]
    with capfd.disabled():
        print(
            f"\nEMERGENCY_STOP of {BOTS} bots with {len(PAIRS)} trades each: all paused "
            f"{data.seconds_to_all_paused:.2f} s, all exited {data.seconds_to_all_exited:.2f} s, "
            f"completed in {data.seconds:.2f} s"
        )


@pytest.mark.slow
async def test_emergency_stop_of_five_bots_with_redis_frozen_through_the_local_endpoint(
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
    outbox = settings.gateway_data_dir / OUTBOX_FILE
    try:
        async with running_gateway(settings) as gw:
            pids = await _bots_with_open_trades(bus)

            # Frozen, not stopped: a partition looks like this (connections hang instead of being refused).
            assert valkey.pid is not None
            os.kill(valkey.pid, signal.SIGSTOP)
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
            response = await gw.http.post("/api/v1/emergency-stop", json=body, headers=admin)
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["gateway_id"] == settings.gateway_id
            _assert_all_halted([EmergencyOutcome.model_validate(r) for r in result["results"]], pids, settings)
            assert result["seconds_to_all_paused"] is not None
            assert result["seconds_to_all_exited"] is not None

            # The answer did not wait for Redis: the completion (and the trades it closed) reach the outbox after
            # it, in order, while Redis is still frozen.
            def queued_types() -> list[str]:
                return [json.loads(line)["type"] for line in outbox.read_text().splitlines()] if outbox.exists() else []

            await until(
                lambda: "EMERGENCY_STOP_COMPLETED" in queued_types(), timeout=60, what="the completion in the outbox"
            )
            queued = queued_types()
            assert queued.count("TRADE_CLOSED") == BOTS * len(PAIRS)  # each once
            assert "BOT_STOPPED" not in queued  # no supervisor came back to stop them a second time
            assert queued[-1] == "EMERGENCY_STOP_COMPLETED"

            os.kill(valkey.pid, signal.SIGCONT)
            completed = await bus.wait(EmergencyStopCompleted, timeout=30)
            assert completed.data.command_id is None
            assert completed.data.results == [EmergencyOutcome.model_validate(r) for r in result["results"]]
            await until(lambda: not outbox.exists(), timeout=10, what="the outbox to be flushed")
            closed = _distinct(await bus.of(TradeClosed))
            assert sorted((e.data.bot_id, e.data.exit_reason) for e in closed) == sorted(
                [(b, "force_exit") for b in pids] * len(PAIRS)
            )
            assert len({(e.data.bot_id, e.data.trade_id) for e in closed}) == BOTS * len(PAIRS)
            # Nothing restarted them meanwhile.
            assert len(await bus.of(BotStarted)) == BOTS
            views = (await gw.http.get("/api/v1/bots", headers=admin)).json()["bots"]
            assert {(v["desired"], v["actual"], v["pid"]) for v in views} == {("halted", "halted", None)}
    finally:
        if valkey.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(valkey.pid, signal.SIGCONT)
        await bus.aclose()
        valkey.stop()
    with capfd.disabled():
        print(
            f"\nlocal emergency stop of {BOTS} bots with {len(PAIRS)} trades each, Redis frozen: all paused "
            f"{result['seconds_to_all_paused']:.2f} s, all exited {result['seconds_to_all_exited']:.2f} s, "
            f"answered in {result['seconds']:.2f} s"
        )


async def _opened(bus: Bus, bot_id: uuid.UUID, count: int) -> bool:
    return len(await bus.of(TradeOpened, bot_id)) >= count


def _distinct(events: list[E]) -> list[E]:
    """One of each event id: delivery is at least once (an event whose publish timed out on a busy machine is
    sent again from the outbox, with the same id), and consumers drop repeats by id."""
    return list({e.event_id: e for e in events}.values())


async def _closed(bus: Bus, count: int) -> list[TradeClosed]:
    closed = _distinct(await bus.of(TradeClosed))
    return closed if len(closed) >= count else []


async def _beats_after(bus: Bus, beat: GatewayHeartbeat, count: int) -> bool:
    return len([e for e in await bus.of(GatewayHeartbeat) if e.occurred_at > beat.occurred_at]) >= count


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
