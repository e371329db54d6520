"""A Valkey failover in the middle of a burst, through real servers: a management server and a gateway whose
``REDIS_URL`` is a Sentinel URL (``tests/sentinel.py``: a primary, its replica, three sentinels). 500 commands go
through the outbox and 40 reports come back while the primary is killed (SIGKILL: what it had not replicated is
lost). The sentinels promote the replica; every client finds it by itself; every command is carried out once,
counted at the gateway, and every report is applied once, counted in the audit log."""

from __future__ import annotations

import time
import uuid

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from management_server.bus.service import enqueue
from management_server.config import ManagementSettings
from management_server.main import create_app as create_management
from shared.bus.messages import StopBot, StopBotData
from shared.bus.streams import commands_stream
from shared.redis import create_redis
from tests.enrollment import enroll_settings
from tests.helpers import async_wait_for, serve
from tests.sentinel import SentinelSet
from tests.trading_gateway.bus.test_acks import answered, audited, mcp_call
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app as create_gateway

pytestmark = pytest.mark.slow

BURST = 500
REPORTS = 40


async def test_a_valkey_failover_in_a_burst_of_500_commands_loses_none_and_applies_none_twice(
    sentinels: SentinelSet, management_settings: ManagementSettings, gateway_settings: GatewaySettings
) -> None:
    url = SecretStr(sentinels.url)
    management_settings = management_settings.model_copy(update={"redis_url": url, "command_answer_within": 2.0})
    await enroll_settings(management_settings.database_url.get_secret_value(), gateway_settings)
    management = create_management(management_settings)
    gateway_id = gateway_settings.gateway_id
    commands = [StopBot(source="management", data=StopBotData(bot_id=uuid.uuid4(), generation=1)) for _ in range(BURST)]
    ids = [c.event_id for c in commands]
    reports = [mcp_call(gateway_id) for _ in range(REPORTS)]
    targets = [r.data.target_id for r in reports]
    observer: aioredis.Redis = create_redis(sentinels.url)
    async with serve(management) as management_url:
        settings = gateway_settings.model_copy(
            update={"redis_url": url, "management_url": management_url, "event_receipt_within": 2.0}
        )
        gateway = create_gateway(settings)
        async with serve(gateway):
            sessionmaker = management.state.sessionmaker
            consumer = gateway.state.command_consumer
            events = gateway.state.fleet.events

            async def write(batch: list[StopBot]) -> None:
                async with sessionmaker.begin() as session:
                    for command in batch:
                        await enqueue(session, commands_stream(gateway_id), command)

            half = BURST // 2
            for start in range(0, half, 50):
                await write(commands[start : start + 50])
            for report in reports[: REPORTS // 2]:
                await events.publish(report)

            async def some_applied() -> bool:
                return consumer.stats.handled >= BURST // 10

            await async_wait_for(some_applied, timeout=60, what="part of the burst applied")
            sentinels.primary.kill()  # lost, with whatever it had not replicated
            killed = time.monotonic()
            for start in range(half, BURST, 50):
                await write(commands[start : start + 50])
            for report in reports[REPORTS // 2 :]:
                await events.publish(report)  # the gateway's outbox keeps what Redis can't take now

            async def applied_again() -> bool:
                return consumer.stats.handled > half

            await async_wait_for(applied_again, timeout=60, what="commands applied after the failover")
            resumed = time.monotonic() - killed

            async def all_done() -> bool:
                return (
                    await answered(sessionmaker, ids) == BURST
                    and len(await audited(sessionmaker, targets)) == REPORTS
                    and events.receipts.count() == 0
                )

            await async_wait_for(all_done, timeout=120, interval=0.5, what="every command answered, every report")
            applied = consumer.deduplicator
            assert applied.count() == BURST  # every command applied...
            assert consumer.stats.handled == BURST  # ...once each
            assert set((await audited(sessionmaker, targets)).values()) == {1}  # every report applied once
            primary = await observer.connection_pool.get_master_address()  # type: ignore[attr-defined]
            assert primary[1] == sentinels.replica.port  # the replica took over
            print(
                f"\n{BURST} commands, {REPORTS} reports, the Valkey primary killed: commands applied again "
                f"{resumed:.1f} s later; {consumer.stats.duplicates} copies recognised, "
                f"{events.published_again} reports published again; each applied once"
            )
    await observer.aclose()
