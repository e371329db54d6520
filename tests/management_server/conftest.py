"""A running management server with helpers to make users and log in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select

from management_server.audit.models import AuditEntry
from management_server.config import ManagementSettings
from management_server.main import create_app
from management_server.users.models import Role, User
from management_server.users.service import create_user
from tests.helpers import serve

PASSWORD = "correct horse battery staple"


@dataclass
class Management:
    app: FastAPI
    url: str
    client: httpx.AsyncClient
    settings: ManagementSettings

    async def create_user(self, email: str, password: str = PASSWORD, role: Role = Role.user) -> User:
        async with self.app.state.sessionmaker.begin() as session:
            return await create_user(session, self.app.state.password_hasher, email, password, role)

    async def login(self, email: str, password: str = PASSWORD, client: httpx.AsyncClient | None = None) -> Any:
        response = await (client or self.client).post(
            "/api/v1/auth/token", data={"username": email, "password": password}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def audit(self, action: str | None = None) -> list[AuditEntry]:
        async with self.app.state.sessionmaker() as session:
            query = select(AuditEntry).order_by(AuditEntry.id)
            if action is not None:
                query = query.where(AuditEntry.action == action)
            return list((await session.execute(query)).scalars())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture(loop_scope="session")
async def management(management_settings: ManagementSettings) -> AsyncIterator[Management]:
    app = create_app(management_settings)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield Management(app, url, client, management_settings)
