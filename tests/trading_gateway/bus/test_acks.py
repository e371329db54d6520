"""Acks end to end through real servers: a management server (its outbox relay, its events consumer) and a gateway
(its command consumer and handler), on one PostgreSQL and one Valkey. A burst of commands is written to the outbox;
in the middle of it Valkey loses everything (``FLUSHALL``: the streams, the consumer groups, the answers on their
way). Every command is still carried out, and once each, counted at the gateway: the management server publishes
what has no answer again, and the gateway recognises what it applied already (``bus/applied.py``, on its disk)
and answers it again."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from management_server.bus.models import OutboxMessage
from management_server.bus.service import enqueue
from management_server.config import ManagementSettings
from management_server.main import create_app as create_management
from shared.bus.messages import StopBot, StopBotData
from shared.bus.streams import commands_stream
from tests.enrollment import enroll_settings
from tests.helpers import async_wait_for, serve
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app as create_gateway

pytestmark = pytest.mark.slow

BURST = 60


async def test_a_flushall_in_the_middle_of_a_burst_loses_no_command_and_applies_none_twice(
    management_settings: ManagementSettings, gateway_settings: GatewaySettings, redis_url: str
) -> None:
    management_settings = management_settings.model_copy(update={"command_answer_within": 1.0})
    await enroll_settings(management_settings.database_url.get_secret_value(), gateway_settings)
    management = create_management(management_settings)
    redis = aioredis.Redis.from_url(redis_url)
    commands = [StopBot(source="management", data=StopBotData(bot_id=uuid.uuid4(), generation=1)) for _ in range(BURST)]
    ids = [c.event_id for c in commands]
    try:
        async with serve(management) as management_url:
            gateway = create_gateway(gateway_settings.model_copy(update={"management_url": management_url}))
            async with serve(gateway):
                sessionmaker = management.state.sessionmaker

                async def write(batch: list[StopBot]) -> None:
                    for command in batch:
                        async with sessionmaker.begin() as session:
                            await enqueue(session, commands_stream(gateway_settings.gateway_id), command)

                def consumer_stats() -> tuple[int, int]:
                    stats = gateway.state.command_consumer.stats
                    return stats.handled, stats.duplicates

                async def answered() -> int:
                    async with sessionmaker() as session:
                        done = select(func.count()).where(
                            OutboxMessage.event_id.in_(ids), OutboxMessage.acknowledged_at.is_not(None)
                        )
                        return int(await session.scalar(done) or 0)

                await write(commands[: BURST // 2])
                await async_wait_for(
                    lambda: _at_least(consumer_stats()[0], BURST // 6), timeout=30, what="some of the burst applied"
                )
                await redis.flushall()  # Valkey loses everything: streams, groups, answers on their way
                await write(commands[BURST // 2 :])

                async def all_answered() -> bool:
                    return await answered() == BURST

                await async_wait_for(all_answered, timeout=90, interval=0.5, what="every command answered")
                handled, duplicates = consumer_stats()
                applied = gateway.state.command_consumer.deduplicator
                assert applied.count() == BURST  # every command applied...
                assert handled == BURST  # ...once each
                print(
                    f"\n{BURST} commands, a FLUSHALL in the middle: {duplicates} copies recognised and answered again"
                )
    finally:
        await redis.aclose()


async def _at_least(value: int, floor: int) -> bool:
    return value >= floor
