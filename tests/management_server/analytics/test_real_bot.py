"""A real Freqtrade bot trading on a scripted simulator path, through the real management server, bus and
gateway: our analytics equal the bot's own ``/api/v1/profit``; a missed trade event is filled in from the
gateway; a drawdown breach pauses the bot on the report of the losing trade, and is audited."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import delete

from management_server.analytics.trades import TradeSync
from management_server.bots.models import Trade
from management_server.config import ManagementSettings
from management_server.main import create_app as create_management
from management_server.users.models import Role
from management_server.users.service import create_user
from shared.bus.messages import TradeClosed
from shared.bus.streams import EVENTS_STREAM
from shared.settings import Environment
from tests.enrollment import enroll_settings
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, free_port, serve
from tests.management_server.conftest import PASSWORD, bearer
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.service import Fleet
from trading_gateway.main import create_app as create_gateway

pytestmark = pytest.mark.slow

# pair -> where its price goes (percent) once the bot holds it; exits in this order make a drawdown
MOVES = {"BTC/USDT": 2.0, "ETH/USDT": -1.5, "SOL/USDT": 1.0}
HELD = "XRP/USDT"  # stays open through the comparison, then falls through the stoploss


@dataclass
class System:
    management: FastAPI
    gateway: FastAPI
    api: httpx.AsyncClient
    sim: httpx.AsyncClient
    admin: dict[str, str]

    @property
    def fleet(self) -> Fleet:
        fleet: Fleet = self.gateway.state.fleet
        return fleet


@pytest_asyncio.fixture(loop_scope="session")
async def system(
    database_url: str, redis_url: str, tmp_path: Path, own_simulator: SimulatorProcess
) -> AsyncIterator[System]:
    management_settings = ManagementSettings(
        env=Environment.test,
        data_dir=tmp_path / "management",
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
        rate_limit_enabled=False,
        trade_sync_interval=3600,  # the test runs the sync itself
    )
    management = create_management(management_settings)
    gateway_port = free_port()
    ports = random.randrange(20_000, 60_000, 100)
    async with serve(management) as management_url:
        gateway_settings = GatewaySettings(
            env=Environment.test,
            data_dir=tmp_path / "gateway",
            redis_url=SecretStr(redis_url),
            gateway_id=f"gw-analytics-{uuid.uuid4().hex[:6]}",
            management_url=management_url,
            gateway_public_url=f"http://127.0.0.1:{gateway_port}",
            simulator_url=own_simulator.url,
            bot_port_range_start=ports,
            bot_port_range_end=ports + 9,
            status_interval=0.5,
            heartbeat_interval=1.0,
            bot_process_throttle_secs=1,
            bot_start_timeout=60,
            bot_stop_grace=10,
            stop_bots_on_shutdown=True,
        )
        await enroll_settings(database_url, gateway_settings)
        gateway = create_gateway(gateway_settings)
        try:
            async with (
                serve(gateway, gateway_port),
                httpx.AsyncClient(base_url=management_url + "/api/v1", timeout=60) as api,
                httpx.AsyncClient(base_url=own_simulator.url, timeout=30) as sim,
            ):
                async with management.state.sessionmaker.begin() as session:
                    hasher = management.state.password_hasher
                    await create_user(session, hasher, "root@example.com", PASSWORD, Role.admin)
                token = await api.post("/auth/token", data={"username": "root@example.com", "password": PASSWORD})
                yield System(management, gateway, api, sim, bearer(token.json()["access_token"]))
        finally:
            for orphan in find_orphans(gateway_settings.gateway_data_dir / "bots"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(orphan.pid, signal.SIGKILL)


async def get(system: System, path: str) -> Any:
    response = await system.api.get(path, headers=system.admin)
    assert response.status_code == 200, response.text
    return response.json()


async def post(system: System, path: str, body: dict[str, Any] | None = None) -> Any:
    response = await system.api.post(path, json=body, headers=system.admin)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def wait_on_path(system: System, pair: str, target: float) -> None:
    async def there() -> bool:
        answer = await system.sim.get("/api/v3/ticker/price", params={"symbol": pair.replace("/", "")})
        return abs(float(answer.json()["price"]) - target) / target < 1e-4

    await async_wait_for(there, timeout=20, what=f"{pair} on its path")


def same(ours: float | None, theirs: float, what: str) -> None:
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9), what


async def test_a_real_bots_figures_missed_trades_and_the_risk_guard(system: System) -> None:
    strategy = await post(system, "/strategies", {"name": "always-market", "source": ALWAYS_ENTER_MARKET})
    pairs = [*MOVES, HELD]
    bot = await post(
        system,
        "/bots",
        {
            "name": "analytics-bot",
            "strategy_id": strategy["id"],
            "pairs": pairs,
            "timeframe": "1m",
            "stake_amount": "100",
            "max_open_trades": len(pairs),
            "dry_run_wallet": "1000",
            "stoploss": -0.3,
        },
    )
    bot_id = bot["id"]

    async def gateway_live() -> bool:
        response = await system.api.post(f"/bots/{bot_id}/start", headers=system.admin)
        return response.status_code == 200 and response.json()["notice"] is None

    await async_wait_for(gateway_live, timeout=30, interval=0.5, what="a live gateway taking the start")

    async def all_open() -> list[dict[str, Any]] | None:
        status = await get(system, f"/bots/{bot_id}/status")
        trades = status["open_trades"]
        return trades if status["state"] == "running" and len(trades) == len(pairs) else None

    opened = await async_wait_for(all_open, timeout=120, interval=0.5, what="a trade open on every pair")
    trade_of = {t["pair"]: t["trade_id"] for t in opened}

    # Script the prices: each pair to its level within 2 s, then flat for 10 minutes.
    targets = {}
    for pair, percent in MOVES.items():
        path = {
            "pair": pair,
            "points": [{"after_seconds": 2, "percent": percent}, {"after_seconds": 600, "percent": percent}],
        }
        targets[pair] = (await system.sim.post("/_sim/path", json=path)).json()["points"][0]["price"]
    for pair, price in targets.items():
        await wait_on_path(system, pair, price)
    await post(system, f"/bots/{bot_id}/pause")  # no new entries while we close
    closed_ids: list[int] = []
    for pair in MOVES:
        await post(system, f"/bots/{bot_id}/forceexit", {"trade_id": trade_of[pair]})
        closed_ids.append(trade_of[pair])

        async def recorded(ids: tuple[int, ...] = tuple(closed_ids)) -> bool:
            trades = await get(system, f"/bots/{bot_id}/trades")
            return {t["trade_id"] for t in trades if not t["is_open"]} == set(ids)

        await async_wait_for(recorded, timeout=30, what=f"the exit of {pair} recorded")  # in order, seconds apart

    api = system.fleet.bot(uuid.UUID(bot_id)).api  # type: ignore[union-attr]
    assert api is not None
    profit = await api.profit()  # the bot's own /api/v1/profit
    figures = await get(system, f"/analytics/bots/{bot_id}")
    assert (figures["trade_count"], figures["closed_trade_count"]) == (profit["trade_count"], 3)
    assert profit["closed_trade_count"] == 3
    same(figures["profit_abs"], profit["profit_closed_coin"], "profit_abs")
    same(figures["profit_ratio"], profit["profit_closed_ratio"], "profit_ratio")
    same(figures["profit_ratio_mean"], profit["profit_closed_ratio_mean"], "profit_ratio_mean")
    same(figures["win_rate"], profit["winrate"], "win_rate")
    assert (figures["winning_trades"], figures["losing_trades"]) == (profit["winning_trades"], profit["losing_trades"])
    assert (figures["winning_trades"], figures["losing_trades"]) == (2, 1)
    same(figures["profit_factor"], profit["profit_factor"], "profit_factor")
    for ours, theirs in [
        ("expectancy", "expectancy"),
        ("expectancy_ratio", "expectancy_ratio"),
        ("max_drawdown_ratio", "max_drawdown"),
        ("max_drawdown_abs", "max_drawdown_abs"),
        ("current_drawdown_abs", "current_drawdown_abs"),
        ("current_drawdown_ratio", "current_drawdown"),
        ("sharpe", "sharpe"),
        ("sortino", "sortino"),
        ("calmar", "calmar"),
        ("sqn", "sqn"),
    ]:
        same(figures[ours], profit[theirs], ours)
    assert figures["max_drawdown_abs"] > 0
    for ours, theirs in [
        ("max_drawdown_start", "max_drawdown_start_timestamp"),
        ("max_drawdown_end", "max_drawdown_end_timestamp"),
        ("current_drawdown_start", "current_drawdown_start_timestamp"),
    ]:
        assert int(datetime.fromisoformat(figures[ours]).timestamp() * 1000) == profit[theirs], ours
    assert figures["avg_duration"] == profit["avg_duration"]
    assert figures["best_pair"]["pair"] == profit["best_pair"] == "BTC/USDT"
    same(figures["best_pair"]["profit_abs"], profit["best_pair_profit_abs"], "best pair profit")
    assert figures["best_pair"]["profit_ratio"] == pytest.approx(profit["best_pair_profit_ratio"], rel=1e-3)
    assert figures["first_trade_date"] is not None

    # A missed TRADE_CLOSED (here: the row is gone) is filled in from the gateway, with a service token.
    sessionmaker = system.management.state.sessionmaker
    async with sessionmaker.begin() as session:
        await session.execute(delete(Trade).where(Trade.bot_id == uuid.UUID(bot_id), Trade.trade_id == closed_ids[1]))
    sync: TradeSync = system.management.state.trade_sync
    gateway = system.gateway.state.settings
    assert await sync.gaps() == [(uuid.UUID(bot_id), gateway.gateway_id, gateway.api_url)]
    assert await sync.run_once() == 1
    assert await sync.gaps() == []
    assert await get(system, f"/analytics/bots/{bot_id}") | {"generated_at": None} == figures | {"generated_at": None}

    # The risk guard: a 0.5 % limit; the held pair falls 40 % through its 30 % stoploss.
    await post(system, f"/bots/{bot_id}/resume")
    changed = await system.api.patch(f"/bots/{bot_id}", json={"max_drawdown_ratio": 0.005}, headers=system.admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["max_drawdown_ratio"] == 0.005
    await system.sim.post("/_sim/shock", json={"pair": HELD, "percent": -40})

    async def paused() -> dict[str, Any] | None:
        found = await get(system, f"/bots/{bot_id}")
        return found if found["desired_state"] == "paused" else None

    breached = await async_wait_for(paused, timeout=60, interval=0.25, what="the risk guard to pause the bot")
    assert breached["risk_reason"].startswith("drawdown limit reached")
    assert breached["risk_paused_at"] is not None
    [entry] = (await get(system, "/audit?action=risk.pause"))["items"]
    assert (entry["actor"], entry["outcome"], entry["target_id"]) == ("risk-guard", "success", bot_id)
    assert entry["details"]["drawdown_ratio"] >= 0.005
    # It was decided on the report of the losing trade: the stoploss exit of the held pair.
    cause = uuid.UUID(entry["details"]["caused_by_event"])
    redis = system.management.state.redis
    events = [f for _, f in await redis.xrange(EVENTS_STREAM) if f[b"event_id"].decode() == str(cause)]
    [message] = [TradeClosed.model_validate_json(f[b"envelope"]) for f in events]
    assert (message.data.pair, message.data.trade_id, message.data.exit_reason) == (HELD, trade_of[HELD], "stop_loss")
    # The PAUSE went through the outbox to the gateway: Freqtrade's stopentry.
    await async_wait_for(
        lambda: _freqtrade_state(system, bot_id, "paused"), timeout=30, what="the bot paused by Freqtrade's stopentry"
    )


async def _freqtrade_state(system: System, bot_id: str, state: str) -> bool:
    status = await get(system, f"/bots/{bot_id}/status")
    return bool(status["state"] == state)
