"""`POST /bots/{id}/migrate-db` on the management server alone (the copy on a gateway: tests/e2e/test_trade_db.py):
who may, when it is refused and why, and a bot that never ran, which has no trades anywhere and moves at once."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, update

from freqfleet.embedded import EmbeddedPostgres
from management_server.botdb.models import BotDatabase
from management_server.botdb.service import Provisioner
from management_server.bots.models import Bot
from management_server.config import ManagementSettings
from management_server.users.models import Role
from shared.trade_db import database_name
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.conftest import Management

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def management_settings(management_settings: ManagementSettings, postgres: EmbeddedPostgres) -> ManagementSettings:
    return management_settings.model_copy(
        update={"bot_db": "postgres", "bot_db_admin_url": SecretStr(postgres.provisioner_url())}
    )


async def _sqlite_bot(management: Management, headers: dict[str, str]) -> str:
    """A bot as one made before FREQFLEET_BOT_DB=postgres: its trades in SQLite, no database of its own."""
    strategy = (await upload(management, headers)).json()["id"]
    created = await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=headers)
    assert created.status_code == 201, created.text
    bot_id = uuid.UUID(created.json()["id"])
    provisioner: Provisioner = management.app.state.bot_databases
    await provisioner.drop(database_name(bot_id))
    async with management.app.state.sessionmaker.begin() as session:
        await session.execute(delete(BotDatabase).where(BotDatabase.bot_id == bot_id))
        await session.execute(update(Bot).where(Bot.id == bot_id).values(trade_db="sqlite"))
    return str(bot_id)


async def test_a_bot_that_never_ran_moves_at_once_and_only_an_admin_may_move_one(management: Management) -> None:
    user = await session_of(management, "owner@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    bot_id = await _sqlite_bot(management, user)

    refused = await management.client.post(f"/api/v1/bots/{bot_id}/migrate-db", headers=user)
    assert refused.status_code == 403, refused.text

    moved = await management.client.post(f"/api/v1/bots/{bot_id}/migrate-db", headers=admin)
    assert moved.status_code == 202, moved.text
    body = moved.json()
    assert (body["trade_db"], body["command_id"], body["notice"]) == ("postgres", None, None)
    provisioner: Provisioner = management.app.state.bot_databases
    try:
        again = await management.client.post(f"/api/v1/bots/{bot_id}/migrate-db", headers=admin)
        assert again.status_code == 409
        assert again.json()["detail"] == "The bot's trades are in PostgreSQL already."
        audit = await management.client.get(
            "/api/v1/audit", params={"action": "bot.migrate_trade_db", "target_id": bot_id}, headers=admin
        )
        (row,) = audit.json()["items"]
        assert (row["outcome"], row["details"]["database"]) == ("success", database_name(uuid.UUID(bot_id)))
    finally:
        await provisioner.drop(database_name(uuid.UUID(bot_id)))
