"""Many bots on one IP against the simulator with Binance's limits on (6,000 weight a minute): directly they get
429s; through the gateway's relay they get none, and see the candles the exchange has; a ban of the IP stops the
relay, and the bots, never killed, trade on after it; a killed relay comes back and the bots with it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from shared.bus.messages import BotFailed, BotStarted, BotStatus, CommandAccepted
from tests.exchange_simulator.conftest import start_simulator_process, stop_simulator_process
from tests.helpers import async_wait_for
from tests.trading_gateway.conftest import (
    Bus,
    Tokens,
    running_gateway,
    settings_for,
    spec_for,
    start,
)
from trading_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow

PAIRS = tuple(f"{b}/USDT" for b in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "BNB", "LTC", "DOT", "LINK"))
BOTS = 3


async def limits(sim: httpx.AsyncClient) -> dict[str, Any]:
    found: dict[str, Any] = (await sim.get("/_sim/limits")).json()
    return found


async def spend(sim: httpx.AsyncClient, weight: int) -> None:
    """Another program on this IP: spends the minute's weight up to ``weight`` (all tickers, 80 a request); it
    never asks past that, so every 429 is the bots'."""
    while True:
        used = sum(ip["used_weight_1m"] for ip in (await limits(sim))["ips"].values())
        if used + 80 > weight:
            return
        assert (await sim.get("/api/v3/ticker/24hr")).status_code == 200


async def test_many_bots_on_one_ip_without_and_with_the_relay(
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    simulator = start_simulator_process(tmp_path / "simulator.log", pairs=list(PAIRS))
    try:
        async with httpx.AsyncClient(base_url=simulator.url, timeout=10) as sim:
            # Directly, 3 bots with a trade on each of 10 pairs price their exits from the book every second, each its
            # own ccxt: none knows what the IP has left. Another program on the IP has spent 80 % of each minute (so
            # that the test need not wait for 3 bots alone to spend 6,000): the exchange soon answers them 429.
            direct = settings_for(
                tmp_path / "direct",
                redis_url,
                simulator,
                tokens,
                relay=False,
                stop_bots_on_shutdown=True,
                bot_stop_grace=2.0,
            )
            cleanup.append(direct)
            bus = bus_factory(direct.gateway_id)
            ids = [uuid.uuid4() for _ in range(BOTS)]
            async with running_gateway(direct):
                for bot_id in ids:
                    assert isinstance(
                        await bus.answer(await bus.send(start(bot_id, 1, spec_for(PAIRS)))), CommandAccepted
                    )

                async def refused() -> bool:
                    await spend(sim, 4800)
                    return (await limits(sim))["requests_429"] > 0

                await async_wait_for(refused, timeout=120, interval=1, what="the exchange to answer 429 to the bots")
            assert (await sim.post("/_sim/reset")).status_code == 200  # counts, bans and limits as configured

            # Through the relay (the default), the same fleet for 10 s: no 429, no 418 (bench/relay.py: 30 bots, 5 min).
            relayed = settings_for(
                tmp_path / "relay", redis_url, simulator, tokens, bot_unresponsive_timeout=3.0, bot_stop_grace=3.0
            )
            cleanup.append(relayed)
            bus = bus_factory(relayed.gateway_id)
            ids = [uuid.uuid4() for _ in range(BOTS)]
            async with running_gateway(relayed) as gw:
                fleet = gw.app.state.fleet
                for bot_id in ids:
                    assert isinstance(
                        await bus.answer(await bus.send(start(bot_id, 1, spec_for(PAIRS)))), CommandAccepted
                    )
                started = {bot_id: await bus.wait(BotStarted, bot_id=bot_id) for bot_id in ids}
                window = time.monotonic() + 10
                while time.monotonic() < window:
                    state = await limits(sim)
                    assert (state["requests_429"], state["requests_418"]) == (0, 0), state
                    await asyncio.sleep(1.0)  # a sample a second over the window (not waiting for anything)
                for bot_id in ids:  # every bot traded all ten pairs meanwhile
                    status = await bus.wait(BotStatus, lambda e: len(e.data.open_trades) == len(PAIRS), bot_id=bot_id)
                    assert status.data.state == "running"

                # Each bot's candles are the exchange's: its analysed 1m candles against a direct fetch.
                direct_rows = (
                    await sim.get("/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "1m", "limit": "50"})
                ).json()
                by_open = {int(r[0]): [float(x) for x in r[1:6]] for r in direct_rows[:-1]}
                for bot_id in ids:
                    api = fleet.bots[str(bot_id)].api
                    rows = await api.pair_candles("ETH/USDT", "1m", limit=30)
                    seen = [
                        (int(r["__date_ts"]), [r["open"], r["high"], r["low"], r["close"], r["volume"]]) for r in rows
                    ]
                    compared = [(t, v) for t, v in seen if t in by_open]
                    assert len(compared) >= 25
                    assert all(v == pytest.approx(by_open[t]) for t, v in compared)

                # A ban of the IP (something else on it misbehaved): the relay goes silent until it ends, and no bot is
                # killed or fails (its status reads may fail meanwhile); after it the bots' requests go through again.
                await sim.put("/_sim/limits", json={"weight_per_minute": 10, "ban_after": 1, "first_ban_seconds": 5})
                while (await sim.get("/api/v3/time")).status_code != 418:
                    pass
                await sim.put("/_sim/limits", json={"weight_per_minute": 6000})
                banned = await limits(sim)
                await async_wait_for(lambda: _blocked(fleet), timeout=30, what="the relay to learn of the ban")
                during = _answered(fleet, ids)
                await async_wait_for(lambda: _not_blocked(fleet), timeout=30, what="the ban to end")
                await async_wait_for(
                    lambda: _answered_more(fleet, ids, during), timeout=30, what="bots' requests answered after the ban"
                )
                assert (await limits(sim))["requests_418"] - banned["requests_418"] <= 3  # the relay's first ones only
                for bot_id, first in started.items():
                    assert psutil.Process(first.data.pid).is_running()
                    assert not await bus.of(BotFailed, bot_id)
                    assert [e.data.pid for e in await bus.of(BotStarted, bot_id)] == [first.data.pid]

                # The relay killed: the gateway starts it again on its port, and the bots' next loop goes through it.
                relay = fleet.relay
                assert relay is not None
                assert relay._popen is not None
                os.kill(relay._popen.pid, signal.SIGKILL)
                await async_wait_for(lambda: _restarted(fleet), timeout=30, what="the relay started again")
                await async_wait_for(
                    lambda: _answered_more(fleet, ids, dict.fromkeys(during, 0.0)),
                    timeout=15,
                    what="every bot's requests answered by the new relay",
                )
                for bot_id in ids:
                    assert [e.data.pid for e in await bus.of(BotStarted, bot_id)] == [started[bot_id].data.pid]
    finally:
        stop_simulator_process(simulator)


def _relay_state(fleet: Any) -> dict[str, Any]:
    stats = fleet.relay.last_stats or {}
    found: dict[str, Any] = stats.get("exchanges", {}).get("simulator", {})
    return found


async def _blocked(fleet: Any) -> bool:
    return _relay_state(fleet).get("blocked_status") == 418


async def _not_blocked(fleet: Any) -> bool:
    return _relay_state(fleet).get("blocked_for_seconds", 1) == 0


def _answered(fleet: Any, ids: list[uuid.UUID]) -> dict[str, float]:
    """Per bot, its requests the relay answered with the exchange's data (hits, misses, coalesced)."""
    answered = {}
    for bot_id in ids:
        numbers = fleet.relay.bot_numbers(str(bot_id)) or {}
        answered[str(bot_id)] = sum(numbers.get(k, 0.0) for k in ("hits", "misses", "coalesced"))
    return answered


async def _answered_more(fleet: Any, ids: list[uuid.UUID], before: dict[str, float]) -> bool:
    now = _answered(fleet, ids)
    return all(now[b] > before.get(b, 0.0) for b in now)


async def _restarted(fleet: Any) -> bool:
    return bool(fleet.relay.starts >= 2 and fleet.relay.last_stats is not None)
