"""Acks end to end through real servers: a management server (its outbox relay, its events consumer) and a gateway
(its command consumer and handler, its event publisher), on one PostgreSQL and one Valkey.

Commands: a burst is written to the outbox; in the middle of it Valkey loses everything (``FLUSHALL``: the streams,
the consumer groups, the answers on their way). Every command is still carried out, and once each, counted at the
gateway: the management server publishes what has no answer again, and the gateway recognises what it applied
already (``bus/applied.py``, on its disk) and answers it again.

Events, in the same burst: the gateway reports while the management server reads nothing, then Valkey loses
everything. Every report is still applied, once each, counted in the audit log: the gateway kept each until its
receipt (``bus/receipts.py``) and publishes again what the management server read past without confirming."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from management_server.audit.models import AuditEntry
from management_server.bus.models import OutboxMessage
from management_server.bus.service import enqueue
from management_server.config import ManagementSettings
from management_server.main import create_app as create_management
from shared.bus.messages import McpCall, McpCallData, StopBot, StopBotData
from shared.bus.streams import commands_stream
from tests.enrollment import enroll_settings
from tests.helpers import async_wait_for, serve
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app as create_gateway

pytestmark = pytest.mark.slow

BURST = 60
REPORTS = 20


def mcp_call(gateway_id: str) -> McpCall:
    """A tool call on the gateway: one audit row at the management server, whatever the copies."""
    return McpCall(
        source=f"gateway:{gateway_id}",
        data=McpCallData(
            gateway_id=gateway_id,
            actor_id=uuid.uuid4(),
            role="user",
            token_type="access",
            token_id=uuid.uuid4(),
            transport="websocket",
            kind="tool",
            name="list_bots",
            outcome="success",
            target_type="bot",
            target_id=str(uuid.uuid4()),
            duration_ms=1.0,
        ),
    )


async def answered(sessionmaker: Any, ids: list[uuid.UUID]) -> int:
    """How many of these commands their gateway has answered (the outbox rows acknowledged)."""
    async with sessionmaker() as session:
        done = select(func.count()).where(OutboxMessage.event_id.in_(ids), OutboxMessage.acknowledged_at.is_not(None))
        return int(await session.scalar(done) or 0)


async def audited(sessionmaker: Any, targets: list[str | None]) -> dict[str, int]:
    """The audit rows of these reports (MCP calls), by their target: one each when each was applied once."""
    async with sessionmaker() as session:
        rows = await session.execute(
            select(AuditEntry.target_id, func.count())
            .where(AuditEntry.target_id.in_(targets))
            .group_by(AuditEntry.target_id)
        )
        return {str(target): int(n) for target, n in rows.all()}


async def test_a_flushall_in_the_middle_of_a_burst_loses_no_command_and_no_report_and_applies_none_twice(
    management_settings: ManagementSettings, gateway_settings: GatewaySettings, redis_url: str
) -> None:
    management_settings = management_settings.model_copy(update={"command_answer_within": 1.0})
    await enroll_settings(management_settings.database_url.get_secret_value(), gateway_settings)
    management = create_management(management_settings)
    redis = aioredis.Redis.from_url(redis_url)
    gateway_id = gateway_settings.gateway_id
    commands = [StopBot(source="management", data=StopBotData(bot_id=uuid.uuid4(), generation=1)) for _ in range(BURST)]
    ids = [c.event_id for c in commands]
    lost, after = [mcp_call(gateway_id) for _ in range(REPORTS)], [mcp_call(gateway_id) for _ in range(5)]
    targets = [e.data.target_id for e in lost + after]
    try:
        async with serve(management) as management_url:
            settings = gateway_settings.model_copy(
                update={"management_url": management_url, "event_receipt_within": 1.0}
            )
            gateway = create_gateway(settings)
            async with serve(gateway):
                sessionmaker = management.state.sessionmaker
                events = gateway.state.fleet.events
                events_consumer = management.state.event_consumer

                async def write(batch: list[StopBot]) -> None:
                    for command in batch:
                        async with sessionmaker.begin() as session:
                            await enqueue(session, commands_stream(gateway_id), command)

                def consumer_stats() -> tuple[int, int]:
                    stats = gateway.state.command_consumer.stats
                    return stats.handled, stats.duplicates

                await write(commands[: BURST // 2])
                await async_wait_for(
                    lambda: _at_least(consumer_stats()[0], BURST // 6), timeout=30, what="some of the burst applied"
                )
                await events_consumer.stop()  # the management server reads nothing for a while...
                for report in lost:
                    assert await events.publish(report)
                assert events.receipts.count() >= len(lost)
                await redis.flushall()  # ...and Valkey loses everything: streams, groups, answers, reports
                events_consumer.start()
                await write(commands[BURST // 2 :])
                for report in after:
                    assert await events.publish(report)

                async def all_done() -> bool:
                    return (
                        await answered(sessionmaker, ids) == BURST
                        and len(await audited(sessionmaker, targets)) == len(targets)
                        and events.receipts.count() == 0
                    )

                await async_wait_for(all_done, timeout=90, interval=0.5, what="every command answered, every report")
                handled, duplicates = consumer_stats()
                applied = gateway.state.command_consumer.deduplicator
                assert applied.count() == BURST  # every command applied...
                assert handled == BURST  # ...once each
                assert set((await audited(sessionmaker, targets)).values()) == {1}  # every report applied once
                assert events.published_again >= len(lost)
                print(
                    f"\n{BURST} commands and {len(targets)} reports, a FLUSHALL in the middle: {duplicates} copies of"
                    f" commands recognised and answered again, {events.published_again} reports published again"
                )
    finally:
        await redis.aclose()


async def _at_least(value: int, floor: int) -> bool:
    return value >= floor
