"""One user's agents can't use up another's allowance: the management server limits MCP calls per user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from management_server.config import ManagementSettings
from tests.management_server.conftest import bearer
from tests.trading_gateway.mcp.conftest import running_stack
from tests.trading_gateway.mcp.helpers import error_text, result_data, websocket_client


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    # Small limits, so a flood is a few dozen calls: 20 per minute per address, 30 per minute per user.
    return management_settings.model_copy(
        update={"rate_limit_enabled": True, "rate_limit_per_ip": "20/minute", "rate_limit_per_user": "30/minute"}
    )


async def test_alices_flood_uses_up_her_allowance_not_bobs_nor_the_gateways(
    management_settings: ManagementSettings, redis_url: str, tmp_path: Path
) -> None:
    # Every list_bots asks the management server (no reuse of the caller's list): her calls reach its limits.
    async with running_stack(management_settings, redis_url, tmp_path, mcp_list_seconds=0) as stack:
        alice = await stack.account("alice@example.com")
        bob = await stack.account("bob@example.com")
        async with websocket_client(stack.ws_url, alice) as client:
            answers: list[Any] = [await client.call_tool("list_bots", {}) for _ in range(40)]
        served = [a for a in answers if not a.is_error]
        limited = [error_text(a) for a in answers if a.is_error]
        # Past the address limit (20) her calls went on, counted as hers; past her own (30) they stopped.
        assert 25 <= len(served) <= 30, (len(served), limited[:2])
        assert limited
        assert all("Too many requests" in text for text in limited)
        # Bob's agent, on the same gateway and address, is served.
        async with websocket_client(stack.ws_url, bob) as client:
            for _ in range(5):
                assert result_data(await client.call_tool("list_bots", {}))["bots"] == []
        # A request from the same address that no gateway vouches for is counted per address, as before.
        statuses = [(await stack.api.get("/api/v1/users/me", headers=bearer(bob))).status_code for _ in range(25)]
        assert 429 in statuses
