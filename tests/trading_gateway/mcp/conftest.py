"""A real management server and a real gateway (both under uvicorn) sharing the test's Valkey.

The gateway fetches the management server's JWKS (``management_url``), so the tokens the management
server issues (logins, personal access tokens) are the ones agents use on the gateway's MCP endpoints.
The gateway's heartbeats reach the management server over the bus, so it places bots there; tests that
run real Freqtrade bots also ask for the exchange simulator.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from management_server.config import ManagementSettings
from management_server.gateways.models import Gateway
from management_server.main import create_app as create_management
from management_server.users.models import Role
from shared.settings import Environment
from tests.enrollment import enroll_settings
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, serve
from tests.management_server.bots.test_bots_api import SOURCE
from tests.management_server.conftest import Management, bearer
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app as create_gateway

ALLOWED_ORIGIN = "https://agents.example"


@dataclass
class Stack:
    management: Management
    gateway: FastAPI
    gateway_url: str
    settings: GatewaySettings
    _admin: dict[str, str] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return self.gateway_url + "/mcp"

    @property
    def ws_url(self) -> str:
        return self.gateway_url.replace("http://", "ws://") + "/mcp/ws"

    @property
    def api(self) -> httpx.AsyncClient:
        return self.management.client

    async def account(self, email: str, role: Role = Role.user) -> str:
        """A new user's access token."""
        await self.management.create_user(email, role=role)
        token: str = (await self.management.login(email))["access_token"]
        if role is Role.admin and self._admin is None:
            self._admin = bearer(token)
        return token

    async def admin(self) -> dict[str, str]:
        if self._admin is None:
            await self.account(f"root-{uuid.uuid4().hex[:6]}@example.com", Role.admin)
        assert self._admin is not None
        return self._admin

    async def pat(self, token: str, scopes: list[str], name: str = "agent") -> str:
        response = await self.api.post(
            "/api/v1/users/me/tokens", json={"name": name, "scopes": scopes}, headers=bearer(token)
        )
        assert response.status_code == 201, response.text
        pat: str = response.json()["token"]
        return pat

    async def bot(self, token: str, name: str = "bot-1", **changes: Any) -> str:
        """A stopped bot of the token's user, on an approved AlwaysEnter strategy; its id."""
        headers = bearer(token)
        strategy = await self.api.post(
            "/api/v1/strategies", json={"name": f"s-{name}", "source": SOURCE}, headers=headers
        )
        assert strategy.status_code == 201, strategy.text
        if strategy.json()["status"] != "approved":
            approved = await self.api.post(
                f"/api/v1/strategies/{strategy.json()['id']}/approve", headers=await self.admin()
            )
            assert approved.status_code == 200, approved.text
        body = {
            "name": name,
            "strategy_id": strategy.json()["id"],
            "pairs": ["BTC/USDT"],
            "timeframe": "1m",
            "stake_amount": "100",
            "max_open_trades": 1,
            "dry_run_wallet": "10000",
        } | changes
        created = await self.api.post("/api/v1/bots", json=body, headers=headers)
        assert created.status_code == 201, created.text
        bot_id: str = created.json()["id"]
        return bot_id

    async def rest_bot(self, token: str, bot_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/bots/{bot_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        bot: dict[str, Any] = response.json()
        return bot

    async def gateway_known(self) -> None:
        """Wait until the management server has the gateway's heartbeat (it places bots on it then)."""

        async def known() -> bool:
            async with self.management.app.state.sessionmaker() as session:
                found = await session.execute(select(Gateway).where(Gateway.gateway_id == self.settings.gateway_id))
                gateway = found.scalar_one_or_none()  # enrolled before it starts: heard from once it beats
                return gateway is not None and gateway.last_seen_at is not None

        await async_wait_for(known, timeout=20, what="the gateway's heartbeat at the management server")


def gateway_settings_for(
    data_dir: Path, redis_url: str, management_url: str, simulator_url: str = "http://127.0.0.1:9", **overrides: Any
) -> GatewaySettings:
    start = random.randrange(20_000, 60_000, 100)
    fields: dict[str, Any] = {
        "env": Environment.test,
        "data_dir": data_dir,
        "redis_url": SecretStr(redis_url),
        "gateway_id": f"gw-mcp-{uuid.uuid4().hex[:8]}",
        "management_url": management_url,
        "simulator_url": simulator_url,
        "bot_port_range_start": start,
        "bot_port_range_end": start + 19,
        "status_interval": 0.5,
        "bot_process_throttle_secs": 1,
        "heartbeat_interval": 1.0,
        "bot_start_timeout": 60.0,
        "bot_stop_grace": 10.0,
        "mcp_allowed_origins": [ALLOWED_ORIGIN],
    }
    return GatewaySettings(**(fields | overrides))


@asynccontextmanager
async def running_stack(
    management_settings: ManagementSettings,
    redis_url: str,
    data_dir: Path,
    simulator_url: str | None = None,
    **gateway_overrides: Any,
) -> AsyncIterator[Stack]:
    management_app = create_management(management_settings)
    async with (
        serve(management_app) as management_url,
        httpx.AsyncClient(base_url=management_url, timeout=60) as client,
    ):
        management = Management(management_app, management_url, client, management_settings)
        extra = ({} if simulator_url is None else {"simulator_url": simulator_url}) | gateway_overrides
        settings = gateway_settings_for(data_dir, redis_url, management_url, **extra)
        await enroll_settings(management_settings.database_url.get_secret_value(), settings)
        gateway_app = create_gateway(settings)
        try:
            async with serve(gateway_app) as gateway_url:
                yield Stack(management, gateway_app, gateway_url, settings)
        finally:
            for orphan in find_orphans(settings.gateway_data_dir / "bots"):  # only this test's bots
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(orphan.pid, signal.SIGKILL)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(management_settings: ManagementSettings, redis_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Management server and gateway, no exchange (no bot can run)."""
    async with running_stack(management_settings, redis_url, tmp_path) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def trading_stack(
    management_settings: ManagementSettings, redis_url: str, tmp_path: Path, simulator: SimulatorProcess
) -> AsyncIterator[Stack]:
    """Management server and gateway with the exchange simulator: real bots run."""
    async with running_stack(management_settings, redis_url, tmp_path, simulator.url) as running:
        await running.gateway_known()
        yield running
