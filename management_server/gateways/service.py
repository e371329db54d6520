"""Recording heartbeats and telling which gateways are alive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.gateways.models import Gateway
from shared.bus.messages import GatewayHeartbeat

# A gateway is live while its last heartbeat is younger than this (three missed beats at 5 s).
LIVE_WINDOW = timedelta(seconds=15)


async def record_heartbeat(session: AsyncSession, beat: GatewayHeartbeat) -> None:
    """Upsert the gateway; a heartbeat older than the one recorded (out of order) changes nothing."""
    data = beat.data
    values = {
        "gateway_id": data.gateway_id,
        "host": data.host,
        "version": data.version,
        "started_at": data.started_at,
        "last_seen_at": beat.occurred_at,
        "bots_running": data.bots_running,
        "capacity": data.capacity,
        "api_url": data.api_url,
    }
    statement = insert(Gateway).values(**values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Gateway.gateway_id],
            set_={k: statement.excluded[k] for k in values if k != "gateway_id"},
            where=Gateway.last_seen_at < statement.excluded.last_seen_at,
        )
    )


async def live_gateways(session: AsyncSession, now: datetime | None = None) -> list[Gateway]:
    """Gateways heard from recently, the least loaded (most free capacity) first."""
    now = now or datetime.now(UTC)
    result = await session.execute(
        select(Gateway)
        .where(Gateway.last_seen_at >= now - LIVE_WINDOW)
        .order_by(Gateway.capacity.desc(), Gateway.bots_running, Gateway.gateway_id)
    )
    return list(result.scalars())
