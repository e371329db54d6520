"""The risk guard through the real management server and bus (the gateway played by the test): a drawdown
breach pauses the bots concerned through the outbox on the very report of the losing trade, records why,
is audited and counted; resuming re-arms the guard from there."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from management_server.config import ManagementSettings
from management_server.users.models import Role
from shared.bus.messages import BotStarted, BotStartedData, TradeClosed, TradeClosedData
from shared.bus.streams import EVENTS_STREAM
from tests.enrollment import publisher_for
from tests.helpers import async_wait_for
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.bots.test_lifecycle import GATEWAY, commands, heartbeat
from tests.management_server.conftest import Management

SOURCE = f"gateway:{GATEWAY}"


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    # bots: 10 % by default; a user's bots together: 2 %
    return management_settings.model_copy(update={"risk_max_drawdown_bot": 0.1, "risk_max_drawdown_user": 0.02})


class Gateway:
    """Reports what a gateway would: the bot started, then its trades closing."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.publisher = publisher_for(redis, GATEWAY)
        self.trades: dict[uuid.UUID, int] = {}

    async def started(self, bot_id: str, generation: int) -> None:
        data = BotStartedData(
            bot_id=uuid.UUID(bot_id),
            generation=generation,
            pid=1,
            port=18100,
            freqtrade_version="2026.9",
            started_at=datetime.now(UTC),
        )
        await self.publisher.publish(EVENTS_STREAM, BotStarted(source=SOURCE, data=data))

    async def closes(self, bot_id: str, profit: float) -> TradeClosed:
        uid = uuid.UUID(bot_id)
        trade_id = self.trades[uid] = self.trades.get(uid, 0) + 1
        now = datetime.now(UTC)
        event = TradeClosed(
            source=SOURCE,
            data=TradeClosedData(
                bot_id=uid,
                trade_id=trade_id,
                pair="BTC/USDT",
                open_date=now - timedelta(minutes=5),
                open_rate=100.0,
                amount=1.0,
                stake_amount=100.0,
                close_date=now,
                close_rate=100.0 + profit,
                profit_abs=profit,
                profit_ratio=profit / 100.0,
                exit_reason="exit_signal",
            ),
        )
        await self.publisher.publish(EVENTS_STREAM, event)
        return event


async def running_bot(
    management: Management, gateway: Gateway, headers: dict[str, str], strategy: str, name: str, **fields: Any
) -> str:
    body = bot_body(strategy, name=name, dry_run_wallet="1000", **fields)  # balance 990 (Freqtrade's 0.99)
    bot_id: str = (await management.client.post("/api/v1/bots", json=body, headers=headers)).json()["id"]
    started = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=headers)
    assert started.status_code == 200, started.text
    await gateway.started(bot_id, started.json()["generation"])
    await async_wait_for(lambda: state(management, headers, bot_id, "running"), timeout=15, what=f"{name} running")
    return bot_id


async def state(management: Management, headers: dict[str, str], bot_id: str, actual: str) -> bool:
    bot = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=headers)).json()
    return bool(bot["actual_state"] == actual)


async def bot_of(management: Management, headers: dict[str, str], bot_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=headers)).json()
    return body


async def closed_count(management: Management, headers: dict[str, str], bot_id: str, count: int) -> bool:
    trades = (await management.client.get(f"/api/v1/bots/{bot_id}/trades", headers=headers)).json()
    return len([t for t in trades if not t["is_open"]]) == count


async def breaches(management: Management, scope: str) -> float:
    text = (await management.client.get("/metrics")).text
    line = next(
        (line for line in text.splitlines() if line.startswith(f'freqfleet_risk_breaches_total{{scope="{scope}"}}')),
        None,
    )
    return float(line.split()[-1]) if line else 0.0


async def test_a_bot_breaching_its_limit_is_paused_audited_and_rearmed_by_a_resume(
    management: Management, redis_url: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    gateway = Gateway(redis)
    alice = await session_of(management, "alice@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, alice)).json()["id"]
    await management.client.post(f"/api/v1/strategies/{strategy}/approve", headers=admin)
    await heartbeat(management)
    bad = await management.client.post(
        "/api/v1/bots", json=bot_body(strategy, name="x", max_drawdown_ratio=1.5), headers=alice
    )
    assert bad.status_code == 422
    bot_id = await running_bot(management, gateway, alice, strategy, "careful", max_drawdown_ratio=0.02)
    before = await breaches(management, "bot")

    await gateway.closes(bot_id, 5.0)  # high-water mark 995
    await gateway.closes(bot_id, -9.0)  # 9 / 995 = 0.9 %: under 2 %
    await async_wait_for(lambda: closed_count(management, alice, bot_id, 2), timeout=15, what="two trades")
    assert (await bot_of(management, alice, bot_id))["desired_state"] == "running"
    losing = await gateway.closes(bot_id, -12.0)  # 21 / 995 = 2.1 %

    async def paused() -> dict[str, Any] | None:
        bot = await bot_of(management, alice, bot_id)
        return bot if bot["desired_state"] == "paused" else None

    bot = await async_wait_for(paused, timeout=15, what="the guard to pause the bot")
    assert bot["risk_reason"].startswith("drawdown limit reached: the bot's drawdown is 2.11%")
    assert "its limit 2.00%" in bot["risk_reason"]
    sent = await commands(redis)
    assert [c["type"] for c in sent] == ["START_BOT", "PAUSE_BOT"]
    assert sent[1]["data"]["generation"] == bot["generation"]
    [entry] = await management.audit("risk.pause")
    assert (entry.actor, entry.actor_id, entry.via, entry.target_id) == ("risk-guard", None, "risk-guard", bot_id)
    assert entry.details is not None
    assert entry.details["caused_by_event"] == str(losing.event_id)  # decided on the losing trade's own report
    assert entry.details["command_id"] == sent[1]["event_id"]
    assert entry.details["drawdown_ratio"] == pytest.approx(21 / 995)
    assert await breaches(management, "bot") == before + 1

    # A resume re-arms the guard from now: the same loss does not pause it again; a new one of 2 % does.
    resumed = await management.client.post(f"/api/v1/bots/{bot_id}/resume", headers=alice)
    assert resumed.json()["risk_reason"] is None
    assert resumed.json()["risk_paused_at"] is not None
    await gateway.closes(bot_id, -15.0)  # 15 / 974 = 1.5 % from the new mark
    await async_wait_for(lambda: closed_count(management, alice, bot_id, 4), timeout=15, what="the fourth trade")
    assert (await bot_of(management, alice, bot_id))["desired_state"] == "running"
    await gateway.closes(bot_id, -6.0)  # 21 / 974 = 2.2 %
    await async_wait_for(paused, timeout=15, what="the guard to pause the bot again")
    assert len(await management.audit("risk.pause")) == 2
    # A bot without a limit of its own takes the default (10 %); the limit can change while it runs.
    patched = await management.client.patch(f"/api/v1/bots/{bot_id}", json={"max_drawdown_ratio": None}, headers=alice)
    assert patched.status_code == 200, patched.text
    assert patched.json()["max_drawdown_ratio"] is None
    assert [c["type"] for c in await commands(redis)] == ["START_BOT", "PAUSE_BOT", "RESUME_BOT", "PAUSE_BOT"]
    await redis.aclose()


async def test_a_users_bots_together_breaching_the_user_limit_are_all_paused(
    management: Management, redis_url: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    gateway = Gateway(redis)
    bob = await session_of(management, "bob@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, bob)).json()["id"]
    await management.client.post(f"/api/v1/strategies/{strategy}/approve", headers=admin)
    await heartbeat(management)
    one = await running_bot(management, gateway, bob, strategy, "one")
    two = await running_bot(management, gateway, bob, strategy, "two")
    three = await running_bot(management, gateway, bob, strategy, "three", stake_currency="BTC", pairs=["ETH/BTC"])
    await gateway.closes(one, -19.0)  # the USDT bots: 19 / 1980 (two wallets of 990), under 2 %
    await async_wait_for(lambda: closed_count(management, bob, one, 1), timeout=15, what="the first loss")
    for bot_id in (one, two, three):
        assert (await bot_of(management, bob, bot_id))["desired_state"] == "running"
    await gateway.closes(two, -23.0)  # USDT bots: 42 / 1980 = 2.1 % of their balance together

    async def both_paused() -> bool:
        return all([(await bot_of(management, bob, b))["desired_state"] == "paused" for b in (one, two)])

    await async_wait_for(both_paused, timeout=15, what="both USDT bots paused")
    first = await bot_of(management, bob, one)
    assert first["risk_reason"].startswith("drawdown limit of the owner's bots reached")
    assert (await bot_of(management, bob, three))["desired_state"] == "running"  # BTC: another pool
    entries = await management.audit("risk.pause")
    assert {e.target_id for e in entries} == {one, two}
    assert {e.details["scope"] for e in entries if e.details} == {"user"}
    assert await breaches(management, "user") >= 2
    await redis.aclose()
