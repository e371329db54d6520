"""Two management servers on one PostgreSQL and one Valkey, with the requests alternated between them and the
gateway played by the test (it reads its command stream, answers each command and reports the bot started or
stopped, signed as the enrolled gateway): 200 bots started, then stopped. Both servers run their outbox relay; one
of them, whichever holds its lock, the events consumer. Each command reaches the gateway once (no relay publishes
a row the other did), each answer and each report is applied once (one "accepted" and one "done" audit row per
command), and every outbox row is answered."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import func, select

from management_server.audit.models import AuditEntry
from management_server.bots.models import Bot
from management_server.bus.models import OutboxMessage
from management_server.config import ManagementSettings
from management_server.gateways.service import record_heartbeat
from management_server.main import create_app
from management_server.users.models import Role
from management_server.users.service import create_user
from shared.bus.messages import (
    BotStarted,
    BotStartedData,
    BotStopped,
    BotStoppedData,
    CommandAccepted,
    CommandAcceptedData,
    GatewayHeartbeat,
    GatewayHeartbeatData,
    StartBot,
    decode,
)
from shared.bus.streams import EVENTS_STREAM, commands_stream, gateway_group
from tests.enrollment import GatewayEvents, ensure_enrolled
from tests.helpers import async_wait_for, serve
from tests.management_server.bots.test_bots_api import SOURCE, bot_body
from tests.management_server.conftest import PASSWORD, bearer

pytestmark = pytest.mark.slow

BOTS = 200
GATEWAY = "gw-replicas"
AT_ONCE = 10  # requests in flight at a time


async def test_two_replicas_alternated_start_and_stop_200_bots_with_each_command_and_report_once(
    management_settings: ManagementSettings, redis_url: str, tmp_path: Path
) -> None:
    # One data folder (keys), one database, one Valkey, as replicas have; the request limits (counted in Valkey, over
    # both) raised for a script's burst of 600 requests.
    limits = {"rate_limit_per_ip": "10000/minute", "rate_limit_per_user": "10000/minute"}
    apps = [
        create_app(management_settings.model_copy(update={"management_port": 18000 + n, **limits})) for n in range(2)
    ]
    redis = aioredis.Redis.from_url(redis_url)
    seen: Counter[uuid.UUID] = Counter()
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve(app)) for app in apps]
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30)) for url in urls]
        sessionmaker = apps[0].state.sessionmaker
        async with sessionmaker.begin() as session:
            await create_user(session, apps[0].state.password_hasher, "root@example.com", PASSWORD, Role.admin)
            await ensure_enrolled(session, GATEWAY)
        login = await clients[1].post("/api/v1/auth/token", data={"username": "root@example.com", "password": PASSWORD})
        admin = bearer(login.json()["access_token"])  # issued by one, taken by both
        heartbeats = asyncio.create_task(_heartbeats(sessionmaker))
        stack.callback(heartbeats.cancel)
        gateway = asyncio.create_task(_gateway(redis, management_settings, seen))
        stack.callback(gateway.cancel)

        strategy = await clients[0].post(
            "/api/v1/strategies", json={"name": "replicas", "source": SOURCE}, headers=admin
        )
        assert strategy.status_code == 201, strategy.text

        async def alternated(call: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]) -> list[Any]:
            bodies: list[Any] = []
            for start in range(0, BOTS, AT_ONCE):
                responses = await asyncio.gather(
                    *(call(clients[i % 2], i) for i in range(start, min(start + AT_ONCE, BOTS)))
                )
                for response in responses:
                    assert response.status_code in (200, 201), response.text
                    bodies.append(response.json())
            return bodies

        created = await alternated(
            lambda client, i: client.post(
                "/api/v1/bots", json=bot_body(strategy.json()["id"], name=f"bot-{i}"), headers=admin
            )
        )
        ids = [bot["id"] for bot in created]
        started = await alternated(lambda client, i: client.post(f"/api/v1/bots/{ids[i]}/start", headers=admin))
        await async_wait_for(lambda: _count(sessionmaker, "running"), timeout=90, what=f"{BOTS} bots running")
        stopped = await alternated(lambda client, i: client.post(f"/api/v1/bots/{ids[i]}/stop", headers=admin))
        await async_wait_for(lambda: _count(sessionmaker, "stopped"), timeout=90, what=f"{BOTS} bots stopped")
        commands = {uuid.UUID(body["command_id"]) for body in started + stopped}
        assert len(commands) == 2 * BOTS

        async def all_answered() -> bool:
            async with sessionmaker() as session:
                waiting = select(func.count()).where(
                    OutboxMessage.event_id.in_(commands), OutboxMessage.acknowledged_at.is_(None)
                )
                return int(await session.scalar(waiting) or 0) == 0

        await async_wait_for(all_answered, timeout=30, what="every command answered")
        assert set(seen) == commands
        assert set(seen.values()) == {1}  # each command reached the gateway once: never published by both relays
        async with sessionmaker() as session:
            rows = await session.execute(
                select(AuditEntry.action, AuditEntry.outcome, func.count())
                .where(AuditEntry.action.in_(("bot.start", "bot.stop")))
                .group_by(AuditEntry.action, AuditEntry.outcome)
            )
            counts = {(action, outcome): n for action, outcome, n in rows.all()}
        for action in ("bot.start", "bot.stop"):  # each request, its answer and its outcome once: every report once
            assert counts[(action, "requested")] == BOTS
            assert counts[(action, "accepted")] == BOTS
            assert counts[(action, "done")] == BOTS
        consuming = [app.state.event_consumer.work is not None for app in apps]
        assert consuming.count(True) == 1  # the events consumer runs in one of them, whichever holds its lock
    await redis.aclose()


async def _count(sessionmaker: Any, state: str) -> bool:
    async with sessionmaker() as session:
        found = await session.scalar(select(func.count()).where(Bot.gateway_id == GATEWAY, Bot.actual_state == state))
    return int(found or 0) == BOTS


async def _heartbeats(sessionmaker: Any) -> None:
    """The gateway's heartbeat every 2 s: live, with room for every bot."""
    while True:
        now = datetime.now(UTC)
        beat = GatewayHeartbeat(
            source=f"gateway:{GATEWAY}",
            occurred_at=now,
            data=GatewayHeartbeatData(
                gateway_id=GATEWAY, host="h", version="t", started_at=now, bots_running=0, capacity=10 * BOTS
            ),
        )
        async with sessionmaker.begin() as session:
            await record_heartbeat(session, beat)
        await asyncio.sleep(2)


async def _gateway(redis: aioredis.Redis, settings: ManagementSettings, seen: Counter[uuid.UUID]) -> None:
    """Reads the gateway's command stream as its consumer group; answers each command and reports its outcome."""
    stream, group = commands_stream(GATEWAY), gateway_group(GATEWAY)
    with contextlib.suppress(ResponseError):  # BUSYGROUP
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    events = GatewayEvents(redis, settings.database_url.get_secret_value())
    source = f"gateway:{GATEWAY}"
    while True:
        found = await redis.xreadgroup(group, "test", {stream: ">"}, count=100, block=500)
        for _, entries in found or []:
            for entry_id, fields in entries:
                command = decode(fields[b"envelope"])
                seen[command.event_id] += 1
                data: Any = command.data
                accepted = CommandAccepted(
                    source=source,
                    data=CommandAcceptedData(
                        command_id=command.event_id, command_type=command.type, bot_id=data.bot_id
                    ),
                )
                report = (
                    BotStarted(
                        source=source,
                        data=BotStartedData(
                            bot_id=data.bot_id,
                            generation=data.generation,
                            pid=1000,
                            port=18100,
                            freqtrade_version="2026.9",
                            started_at=datetime.now(UTC),
                        ),
                    )
                    if isinstance(command, StartBot)
                    else BotStopped(source=source, data=BotStoppedData(bot_id=data.bot_id, generation=data.generation))
                )
                await events.publish(EVENTS_STREAM, accepted)
                await events.publish(EVENTS_STREAM, report)
                await redis.xack(stream, group, entry_id)
