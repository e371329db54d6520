"""Heartbeats from a real gateway reach the management server's database over the bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.config import ManagementSettings
from management_server.db import create_engine, create_sessionmaker
from management_server.gateways.models import Gateway
from management_server.gateways.service import live_gateways, record_heartbeat
from management_server.main import create_app as create_management
from shared.bus.messages import GatewayHeartbeat, GatewayHeartbeatData
from tests.enrollment import enroll_settings, ensure_enrolled
from tests.helpers import async_wait_for, serve
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app as create_gateway


def beat(gateway_id: str, at: datetime, running: int = 0, capacity: int = 10) -> GatewayHeartbeat:
    return GatewayHeartbeat(
        source=f"gateway:{gateway_id}",
        occurred_at=at,
        data=GatewayHeartbeatData(
            gateway_id=gateway_id, host="h", version="0.1.0", started_at=at, bots_running=running, capacity=capacity
        ),
    )


async def test_a_running_gateway_appears_in_the_management_database(
    management_settings: ManagementSettings, gateway_settings: GatewaySettings
) -> None:
    gateway_settings = gateway_settings.model_copy(update={"heartbeat_interval": 0.2, "max_bots": 7})
    engine = create_engine(management_settings)
    sessionmaker = create_sessionmaker(engine)

    async def recorded() -> list[Gateway]:
        async with sessionmaker() as session:
            live = {room.gateway_id for room in await live_gateways(session)}
            return [g for g in (await session.execute(select(Gateway))).scalars() if g.gateway_id in live]

    await enroll_settings(management_settings.database_url.get_secret_value(), gateway_settings)
    try:
        async with serve(create_management(management_settings)), serve(create_gateway(gateway_settings)):
            gateways = await async_wait_for(recorded, timeout=15, what="the gateway's heartbeat")
            first_seen = gateways[0].last_seen_at
            await async_wait_for(lambda: _later(sessionmaker, first_seen), timeout=15, what="a later beat")
        assert [(g.gateway_id, g.capacity, g.bots_running) for g in gateways] == [("gw-test", 7, 0)]
        load = gateways[0].load  # the host's figures, for the dashboard's gateways page
        assert load is not None
        assert load["cpu_count"] >= 1
        assert 0 <= load["memory_percent"] <= 100
        assert load["bots_by_state"]["running"] == 0
        relay = load["relay"]["exchanges"]["simulator"]  # its market-data relay's budget for the host's IP
        assert (relay["limit"], relay["used_weight_1m"]) == (6000, 0)
    finally:
        await engine.dispose()


async def _later(sessionmaker: async_sessionmaker[AsyncSession], than: datetime) -> bool:
    async with sessionmaker() as session:
        gateway = (await session.execute(select(Gateway))).scalar_one()
        return bool(gateway.last_seen_at > than)


async def test_out_of_order_heartbeats_do_not_go_back_in_time(management_settings: ManagementSettings) -> None:
    engine = create_engine(management_settings)
    sessionmaker = create_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        async with sessionmaker.begin() as session:
            for gateway_id in ("gw-a", "gw-b", "gw-c"):
                await ensure_enrolled(session, gateway_id)
            await record_heartbeat(session, beat("gw-unenrolled", now, running=0, capacity=50))  # not heard
            await record_heartbeat(session, beat("gw-a", now, running=3))
            await record_heartbeat(session, beat("gw-a", now - timedelta(seconds=5), running=1))
            await record_heartbeat(session, beat("gw-b", now - timedelta(minutes=5)))
            await record_heartbeat(session, beat("gw-c", now, running=0, capacity=20))
        async with sessionmaker() as session:
            live = [room.gateway_id for room in await live_gateways(session)]
            running = {g.gateway_id: g.bots_running for g in (await session.execute(select(Gateway))).scalars()}
        assert live == ["gw-c", "gw-a"]  # gw-b is silent
        assert (running["gw-c"], running["gw-a"]) == (0, 3)  # the later beat of gw-a is the one kept
    finally:
        await engine.dispose()


async def test_a_full_gateway_is_placed_last(management_settings: ManagementSettings) -> None:
    engine = create_engine(management_settings)
    sessionmaker = create_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        async with sessionmaker.begin() as session:
            for gateway_id in ("gw-full", "gw-free"):
                await ensure_enrolled(session, gateway_id)
            await record_heartbeat(session, beat("gw-full", now, running=20, capacity=0))
            await record_heartbeat(session, beat("gw-free", now, running=2, capacity=18))
        async with sessionmaker() as session:
            assert [g.gateway_id for g in await live_gateways(session)] == ["gw-free", "gw-full"]
    finally:
        await engine.dispose()
