"""MCP_CALL events from gateways become audit rows (via "mcp"), once each, through the real consumer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from shared.bus.messages import McpCall, McpCallData
from shared.bus.streams import EVENTS_STREAM
from tests.enrollment import gateway_events
from tests.helpers import async_wait_for
from tests.management_server.conftest import Management


def call(actor_id: uuid.UUID, **changes: object) -> McpCall:
    fields = {
        "gateway_id": "gw-a",
        "actor_id": actor_id,
        "role": "user",
        "token_type": "pat",
        "token_id": uuid.uuid4(),
        "transport": "websocket",
        "kind": "tool",
        "name": "pause_bot",
        "arguments": {"bot_id": "b1"},
        "outcome": "success",
        "target_type": "bot",
        "target_id": "b1",
        "client_ip": "10.0.0.7",
        "duration_ms": 12.5,
    } | changes
    return McpCall(
        source="gateway:gw-a",
        correlation_id="mcp-abc",
        occurred_at=datetime.now(UTC) - timedelta(seconds=30),
        data=McpCallData.model_validate(fields),
    )


async def test_an_mcp_call_is_audited_once_with_the_callers_email(management: Management, redis_url: str) -> None:
    user = await management.create_user("agent-owner@example.com")
    redis = aioredis.Redis.from_url(redis_url)
    publisher = gateway_events(management, redis)
    first = call(user.id)
    refused = call(uuid.uuid4(), kind="resource", name="bot://b2/status", outcome="denied", reason="lacks 'read'")
    for message in (first, first, refused, first):  # redelivered: still one row
        await publisher.publish(EVENTS_STREAM, message)
    await redis.aclose()

    async def rows() -> list[object]:
        found = [r for r in await management.audit() if r.via == "mcp"]
        return found if len(found) >= 2 else []

    await async_wait_for(rows, timeout=15, what="the MCP audit rows")
    audited = [r for r in await management.audit() if r.via == "mcp"]
    assert len(audited) == 2
    pause, read = audited
    assert (pause.action, pause.actor, pause.actor_id, pause.outcome) == (
        "mcp.pause_bot",
        "agent-owner@example.com",
        user.id,
        "success",
    )
    assert (pause.target_type, pause.target_id, pause.ip, pause.correlation_id) == ("bot", "b1", "10.0.0.7", "mcp-abc")
    assert pause.occurred_at == first.occurred_at
    assert pause.details is not None
    assert pause.details["arguments"] == {"bot_id": "b1"}
    assert (pause.details["auth_type"], pause.details["auth_id"]) == ("pat", str(first.data.token_id))
    assert (read.action, read.outcome, read.reason) == ("mcp.read_resource", "denied", "lacks 'read'")
    assert read.actor == f"unknown user {refused.data.actor_id}"
    assert read.details is not None
    assert read.details["uri"] == "bot://b2/status"
