"""Bot lifecycle through the real management server and the real bus (gateway played by the test)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import select

from management_server.bus.models import OutboxMessage
from management_server.gateways.service import record_heartbeat
from management_server.users.models import Role
from shared.bus.dedupe import RedisDeduplicator
from shared.bus.messages import (
    BotStarted,
    BotStartedData,
    BotStatus,
    BotStatusData,
    BotStopped,
    BotStoppedData,
    CommandAccepted,
    CommandAcceptedData,
    CommandRejected,
    CommandRejectedData,
    GatewayHeartbeat,
    GatewayHeartbeatData,
    InventoryEntry,
    TradeClosed,
    TradeClosedData,
    TradeOpened,
    TradeOpenedData,
)
from shared.bus.streams import EVENTS_STREAM, MANAGEMENT_GROUP, commands_stream
from tests.enrollment import ensure_enrolled, gateway_events
from tests.helpers import async_wait_for
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.conftest import Management

GATEWAY = "gw-test"


async def heartbeat(
    management: Management,
    gateway_id: str = GATEWAY,
    age: timedelta = timedelta(0),
    *,
    at: datetime | None = None,
    inventory: list[InventoryEntry] | None = None,
) -> None:
    """A signed heartbeat of ``gateway_id`` applied (``age`` ago, or ``at``), with its inventory when given."""
    at = at or datetime.now(UTC) - age
    beat = GatewayHeartbeat(
        source=f"gateway:{gateway_id}",
        occurred_at=at,
        data=GatewayHeartbeatData(
            gateway_id=gateway_id,
            host="h",
            version="t",
            started_at=at,
            bots_running=0,
            capacity=10,
            inventory=inventory,
        ),
    )
    async with management.app.state.sessionmaker.begin() as session:
        await ensure_enrolled(session, gateway_id)  # only enrolled gateways are heard
        await record_heartbeat(session, beat)


async def commands(redis: aioredis.Redis, gateway_id: str = GATEWAY) -> list[dict[str, Any]]:
    entries = await redis.xrange(commands_stream(gateway_id))
    return [json.loads(fields[b"envelope"]) for _, fields in entries]


async def admin_bot(management: Management) -> tuple[dict[str, str], str]:
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, admin)).json()["id"]
    bot = await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=admin)
    return admin, bot.json()["id"]


async def test_start_goes_through_the_outbox_and_events_come_back(management: Management, redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    admin, bot_id = await admin_bot(management)
    await heartbeat(management)
    started = await management.client.post(
        f"/api/v1/bots/{bot_id}/start", headers=admin | {"X-Request-ID": "req-start-1"}
    )
    assert started.status_code == 200, started.text
    body = started.json()
    assert (body["desired_state"], body["actual_state"], body["generation"]) == ("running", "starting", 1)
    assert body["gateway_id"] == GATEWAY
    assert body["notice"] is None

    [command] = await async_wait_for(lambda: commands(redis), timeout=10, what="START_BOT on the gateway's stream")
    assert command["type"] == "START_BOT"
    assert command["event_id"] == body["command_id"]
    assert command["correlation_id"] == "req-start-1"
    assert command["data"]["generation"] == 1
    assert command["data"]["spec"]["strategy_class"] == "AlwaysEnter"
    assert "class AlwaysEnter" in command["data"]["spec"]["strategy_source"]

    publisher = gateway_events(management, redis)
    uid = uuid.UUID(bot_id)
    now = datetime.now(UTC)
    src = f"gateway:{GATEWAY}"
    opened = TradeOpenedData(
        bot_id=uid, trade_id=1, pair="BTC/USDT", open_date=now, open_rate=100.0, amount=0.1, stake_amount=10.0
    )
    events = [
        CommandAccepted(  # its answer: the command is done waiting, never published again
            source=src,
            data=CommandAcceptedData(command_id=command["event_id"], command_type="START_BOT", bot_id=uid),
        ),
        BotStarted(
            source=src,
            data=BotStartedData(
                bot_id=uid,
                generation=1,
                pid=123,
                port=18100,
                freqtrade_version="2026.9",
                started_at=now,
                launcher="fork",
            ),
        ),
        BotStatus(
            source=src,
            data=BotStatusData(
                bot_id=uid,
                generation=1,
                state="running",
                open_trades=[{"trade_id": 1, "pair": "BTC/USDT"}],
                profit={"profit_all_coin": 0.0},
            ),
        ),
        TradeOpened(source=src, data=opened),
        TradeClosed(
            source=src,
            data=TradeClosedData(
                **opened.model_dump(),
                close_date=now,
                close_rate=101.0,
                profit_abs=0.09,
                profit_ratio=0.009,
                exit_reason="force_exit",
            ),
        ),
    ]
    for event in events + events:  # every event twice: effects once
        await publisher.publish(EVENTS_STREAM, event)

    async def running() -> bool:
        bot = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=admin)).json()
        trades = (await management.client.get(f"/api/v1/bots/{bot_id}/trades", headers=admin)).json()
        return bot["actual_state"] == "running" and len(trades) == 1 and not trades[0]["is_open"]

    await async_wait_for(running, timeout=15, what="the bot to read running with its closed trade")
    async with management.app.state.sessionmaker() as session:
        row = await session.scalar(
            select(OutboxMessage).where(OutboxMessage.event_id == uuid.UUID(command["event_id"]))
        )
    assert row is not None
    assert row.acknowledged_at is not None
    assert row.republish_at is None
    shown = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=admin)).json()
    assert shown["launcher"] == "fork"  # how its gateway started its process
    listed = (await management.client.get("/api/v1/bots", headers=admin)).json()
    assert [b["launcher"] for b in listed if b["id"] == bot_id] == ["fork"]
    status = (await management.client.get(f"/api/v1/bots/{bot_id}/status", headers=admin)).json()
    assert status["state"] == "running"
    assert status["open_trades"] == [{"trade_id": 1, "pair": "BTC/USDT"}]
    assert 0 <= status["age_seconds"] < 60
    [trade] = (await management.client.get(f"/api/v1/bots/{bot_id}/trades", headers=admin)).json()
    assert (trade["profit_abs"], trade["exit_reason"]) == (0.09, "force_exit")
    # The start's rows: its answer and its final row, once each (every report came twice), under the request's
    # correlation id.
    start_rows = [(r.outcome, r.correlation_id) for r in await management.audit() if r.action == "bot.start"]
    assert start_rows == [("requested", "req-start-1"), ("accepted", "req-start-1"), ("done", "req-start-1")]

    paused = await management.client.post(f"/api/v1/bots/{bot_id}/pause", headers=admin)
    assert (paused.json()["desired_state"], paused.json()["generation"]) == ("paused", 2)
    # A late status of the previous generation does not overwrite what the pause asked for.
    await publisher.publish(
        EVENTS_STREAM, BotStatus(source=src, data=BotStatusData(bot_id=uid, generation=1, state="stopped"))
    )
    forceexit = await management.client.post(
        f"/api/v1/bots/{bot_id}/forceexit", json={"trade_id": "all"}, headers=admin
    )
    assert forceexit.status_code == 200
    stopped = await management.client.post(f"/api/v1/bots/{bot_id}/stop", headers=admin)
    assert (stopped.json()["desired_state"], stopped.json()["actual_state"]) == ("stopped", "stopping")
    types = [c["type"] for c in await async_wait_for(lambda: _at_least(redis, 4), timeout=10, what="four commands")]
    assert types == ["START_BOT", "PAUSE_BOT", "FORCE_EXIT", "STOP_BOT"]
    rows = [r for r in await management.audit() if r.action.startswith("bot.") and r.outcome == "requested"]
    assert [r.action for r in rows] == ["bot.start", "bot.pause", "bot.forceexit", "bot.stop"]

    # The stop is done when the bot is reported stopped (the pause and the force-exit were superseded by it).
    stop_generation = stopped.json()["generation"]
    await publisher.publish(
        EVENTS_STREAM, BotStopped(source=src, data=BotStoppedData(bot_id=uid, generation=stop_generation))
    )

    async def stop_done() -> list[Any]:
        return [r for r in await management.audit() if r.outcome == "done" and r.action == "bot.stop"]

    [done] = await async_wait_for(stop_done, timeout=10, what="the stop's done row")
    assert done.details == {"gateway": src, "reached": "stopped"}
    assert [r.action for r in await management.audit() if r.outcome == "done"] == ["bot.start", "bot.stop"]

    # A trade the bot does not have open is refused at once, not later by the gateway.
    await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    missing = await management.client.post(f"/api/v1/bots/{bot_id}/forceexit", json={"trade_id": 1}, headers=admin)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "The bot has no open trade 1 (its open trades, as last reported: none)."
    refused = [r for r in await management.audit() if r.action == "bot.forceexit"][-1]
    assert (refused.outcome, refused.reason) == ("failure", missing.json()["detail"])
    await redis.aclose()


async def _at_least(redis: aioredis.Redis, count: int) -> list[dict[str, Any]]:
    found = await commands(redis)
    return found if len(found) >= count else []


async def test_what_cannot_start_says_why(management: Management, redis_url: str) -> None:
    alice = await session_of(management, "alice@example.com")
    strategy = (await upload(management, alice)).json()["id"]
    bot_id = (await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=alice)).json()["id"]
    no_gateway = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=alice)
    assert no_gateway.status_code == 409  # the strategy is checked first
    assert "pending review: an admin must approve it" in no_gateway.json()["detail"]
    admin = await session_of(management, "root@example.com", Role.admin)
    await management.client.post(f"/api/v1/strategies/{strategy}/approve", headers=admin)
    nowhere = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=alice)
    assert nowhere.status_code == 503
    assert "No enrolled trading gateway" in nowhere.json()["detail"]
    pause = await management.client.post(f"/api/v1/bots/{bot_id}/pause", headers=alice)
    assert pause.status_code == 409
    assert pause.json()["detail"] == "The bot is not running: start it first."

    await heartbeat(management, "gw-old", age=timedelta(minutes=5))
    queued = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=alice)
    assert queued.status_code == 200
    assert queued.json()["notice"].startswith("Gateway gw-old has not reported")
    bob = await session_of(management, "bob@example.com")
    assert (await management.client.post(f"/api/v1/bots/{bot_id}/stop", headers=bob)).status_code == 404

    rejected = CommandRejected(
        source="gateway:gw-old",
        data=CommandRejectedData(
            command_id=uuid.UUID(queued.json()["command_id"]),
            command_type="START_BOT",
            bot_id=uuid.UUID(bot_id),
            reason="no free port in 18100-18299",
        ),
    )
    redis = aioredis.Redis.from_url(redis_url)
    await gateway_events(management, redis).publish(EVENTS_STREAM, rejected)
    await redis.aclose()

    async def failed() -> dict[str, Any] | None:
        bot: dict[str, Any] = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=alice)).json()
        return bot if bot["actual_state"] == "failed" else None

    bot = await async_wait_for(failed, timeout=15, what="the rejection to show on the bot")
    assert bot["last_error"] == "START_BOT refused by the gateway: no free port in 18100-18299"


async def test_a_running_bot_takes_pairs_and_stake_live(management: Management, redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    admin, bot_id = await admin_bot(management)
    await heartbeat(management)
    await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    changed = await management.client.patch(
        f"/api/v1/bots/{bot_id}", json={"pairs": ["SOL/USDT"], "max_open_trades": 1}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["generation"] == 2
    refused = await management.client.patch(f"/api/v1/bots/{bot_id}", json={"timeframe": "1h"}, headers=admin)
    assert refused.status_code == 409
    assert "Stop the bot before changing timeframe" in refused.json()["detail"]
    found = await async_wait_for(lambda: _at_least(redis, 2), timeout=10, what="the UPDATE_CONFIG")
    update = found[1]
    assert update["type"] == "UPDATE_CONFIG"
    assert (update["data"]["generation"], update["data"]["spec"]["pairs"]) == (2, ["SOL/USDT"])
    assert update["data"]["spec"]["max_open_trades"] == 1

    # The gateway takes that one, then refuses the next two (sent before it answered either): the database goes
    # back to what runs, the first change's values, and says why.
    publisher = gateway_events(management, redis)
    await publisher.publish(
        EVENTS_STREAM,
        CommandAccepted(
            source=f"gateway:{GATEWAY}",
            data=CommandAcceptedData(
                command_id=uuid.UUID(update["event_id"]), command_type="UPDATE_CONFIG", bot_id=uuid.UUID(bot_id)
            ),
        ),
    )
    for stake in ("25", "30"):
        later = await management.client.patch(f"/api/v1/bots/{bot_id}", json={"stake_amount": stake}, headers=admin)
        assert later.json()["stake_amount"] == stake
    sent = await async_wait_for(lambda: _at_least(redis, 4), timeout=10, what="the next two UPDATE_CONFIGs")
    for command, stake in ((sent[2], "25"), (sent[3], "30")):
        await publisher.publish(
            EVENTS_STREAM,
            CommandRejected(
                source=f"gateway:{GATEWAY}",
                data=CommandRejectedData(
                    command_id=uuid.UUID(command["event_id"]),
                    command_type="UPDATE_CONFIG",
                    bot_id=uuid.UUID(bot_id),
                    reason=f"stake_amount {stake} is over the bot's available balance",
                ),
            ),
        )

    async def reverted() -> dict[str, Any] | None:
        bot: dict[str, Any] = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=admin)).json()
        return bot if bot["stake_amount"] == "10" else None

    bot = await async_wait_for(reverted, timeout=15, what="the refused change to be undone")
    assert (bot["pairs"], bot["max_open_trades"]) == (["SOL/USDT"], 1)  # the change it took stays
    assert bot["last_error"] == (
        "UPDATE_CONFIG refused by the gateway: stake_amount 30 is over the bot's available balance; "
        "the bot runs on with its previous pairs, stake and max open trades"
    )
    audited = [(r.action, r.outcome, r.reason) for r in await management.audit() if r.action == "bot.update"]
    assert audited[-1] == ("bot.update", "refused", "stake_amount 30 is over the bot's available balance")
    assert [r[1] for r in audited].count("refused") == 2
    await redis.aclose()


async def test_the_status_of_an_ended_process_does_not_read_as_live(management: Management, redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    publisher = gateway_events(management, redis)
    admin, bot_id = await admin_bot(management)
    await heartbeat(management)
    uid, src = uuid.UUID(bot_id), f"gateway:{GATEWAY}"

    async def status() -> dict[str, Any]:
        body: dict[str, Any] = (await management.client.get(f"/api/v1/bots/{bot_id}/status", headers=admin)).json()
        return body

    async def reads(actual_state: str) -> bool:
        bot = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=admin)).json()
        return bool(bot["actual_state"] == actual_state)

    async def act(action: str) -> int:
        response = await management.client.post(f"/api/v1/bots/{bot_id}/{action}", headers=admin)
        assert response.status_code == 200, response.text
        generation: int = response.json()["generation"]
        return generation

    first = datetime.now(UTC) - timedelta(seconds=60)
    generation = await act("start")
    for event in (
        BotStarted(
            source=src,
            data=BotStartedData(
                bot_id=uid, generation=generation, pid=11, port=18100, freqtrade_version="2026.9", started_at=first
            ),
        ),
        BotStatus(
            source=src,
            occurred_at=first + timedelta(seconds=5),
            data=BotStatusData(
                bot_id=uid,
                generation=generation,
                state="running",
                open_trades=[{"trade_id": 1, "pair": "BTC/USDT"}],
                profit={"profit_all_coin": 1.5},
            ),
        ),
    ):
        await publisher.publish(EVENTS_STREAM, event)
    # Its last report is 55 s old (over FREQFLEET_RECONCILE_STALE_AFTER): it says nothing of now.
    stale = await async_wait_for(lambda: _reported(status), timeout=10, what="the status applied")
    assert (stale["state"], stale["open_trades"], stale["age_seconds"] > 50) == ("unknown", [], True)

    # Stopped: no process, so no live state nor open trades; the last report's profit and time stay.
    generation = await act("stop")
    await publisher.publish(
        EVENTS_STREAM, BotStopped(source=src, data=BotStoppedData(bot_id=uid, generation=generation, exit_code=0))
    )
    await async_wait_for(lambda: reads("stopped"), timeout=10, what="the bot stopped")
    stopped = await status()
    assert (stopped["state"], stopped["actual_state"], stopped["open_trades"]) == (None, "stopped", [])
    assert stopped["profit"] == {"profit_all_coin": 1.5}
    assert stopped["age_seconds"] >= 25

    # Started again: what the previous process reported is not the new one's status.
    generation = await act("start")
    await publisher.publish(
        EVENTS_STREAM,
        BotStarted(
            source=src,
            data=BotStartedData(
                bot_id=uid,
                generation=generation,
                pid=12,
                port=18101,
                freqtrade_version="2026.9",
                started_at=datetime.now(UTC),
            ),
        ),
    )
    await async_wait_for(lambda: reads("running"), timeout=10, what="the bot running again")
    assert ((await status())["state"], (await status())["open_trades"]) == (None, [])
    await publisher.publish(
        EVENTS_STREAM,
        BotStatus(source=src, data=BotStatusData(bot_id=uid, generation=generation, state="running")),
    )
    await async_wait_for(lambda: _state_is(status, "running"), timeout=10, what="the new process's status")
    assert (await status())["open_trades"] == []
    await redis.aclose()


async def test_a_report_older_than_the_newest_one_leaves_the_state(management: Management, redis_url: str) -> None:
    """Events can arrive out of order: a gateway publishes again one Redis lost (its receipt never came), after
    newer ones were applied. A lifecycle report or a status older than the newest lifecycle report of the same
    generation does not take the bot back; a newer one does."""
    redis = aioredis.Redis.from_url(redis_url)
    publisher = gateway_events(management, redis)
    admin, bot_id = await admin_bot(management)
    await heartbeat(management)
    uid, src = uuid.UUID(bot_id), f"gateway:{GATEWAY}"

    async def state() -> str:
        body = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=admin)).json()
        return str(body["actual_state"])

    async def settles(expected: str) -> bool:
        return await state() == expected

    response = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    generation = response.json()["generation"]
    t0 = datetime.now(UTC) - timedelta(seconds=30)

    def started(at: datetime) -> BotStarted:
        data = BotStartedData(
            bot_id=uid, generation=generation, pid=11, port=18100, freqtrade_version="2026.9", started_at=at
        )
        return BotStarted(source=src, occurred_at=at, data=data)

    stopped = BotStopped(
        source=src,
        occurred_at=t0 + timedelta(seconds=10),
        data=BotStoppedData(bot_id=uid, generation=generation, exit_code=1, reason="ended by itself"),
    )
    await publisher.publish(EVENTS_STREAM, started(t0))
    await async_wait_for(lambda: settles("running"), timeout=10, what="the bot running")
    await publisher.publish(EVENTS_STREAM, stopped)
    await async_wait_for(lambda: settles("stopped"), timeout=10, what="the bot stopped")

    # The start report again (a copy whose dedupe mark Redis lost with the rest: a new entry, the old time), and
    # a status from before the stop: both applied, neither says running.
    late_status = BotStatus(
        source=src,
        occurred_at=t0 + timedelta(seconds=5),
        data=BotStatusData(bot_id=uid, generation=generation, state="running"),
    )
    await publisher.publish(EVENTS_STREAM, started(t0))
    await publisher.publish(EVENTS_STREAM, late_status)
    applied = RedisDeduplicator(redis, MANAGEMENT_GROUP).key(late_status.event_id)  # marked once applied, in order

    async def both_applied() -> bool:
        return bool(await redis.exists(applied))

    await async_wait_for(both_applied, timeout=10, what="the late reports applied")
    assert await state() == "stopped"

    # A newer start report of the same generation (the gateway restarted it) does count.
    await publisher.publish(EVENTS_STREAM, started(datetime.now(UTC)))
    await async_wait_for(lambda: settles("running"), timeout=10, what="the bot running again")
    await redis.aclose()


async def _reported(status: Any) -> dict[str, Any] | None:
    body: dict[str, Any] = await status()
    return body if body["age_seconds"] is not None and body["actual_state"] == "running" else None


async def _state_is(status: Any, state: str) -> bool:
    return bool((await status())["state"] == state)
