"""Each bot's trade database on a real PostgreSQL (the session's embedded server, as under `freqfleet up`): what its
role may reach, what the provisioner can do with it, and what a person reads when the server can't help."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

from freqfleet.embedded import APP_ROLE, EmbeddedPostgres
from management_server.backups.archive import pg_tool
from management_server.botdb.models import BotDatabase
from management_server.botdb.service import (
    CONNECTION_LIMIT,
    BotDatabaseRefused,
    Provisioner,
    backup_before_delete,
    password,
    sealed_for,
)
from management_server.config import ManagementSettings
from management_server.security.crypto import MasterKeys
from shared.sealing import open_database
from shared.settings import Environment
from shared.trade_db import bot_url, database_name
from tests.helpers import free_port

session_loop = pytest.mark.asyncio(loop_scope="session")


def provisioner(postgres: EmbeddedPostgres, tmp_path: Path) -> Provisioner:
    settings = ManagementSettings(
        env=Environment.test,
        data_dir=tmp_path,
        bot_db="postgres",
        bot_db_admin_url=SecretStr(postgres.provisioner_url()),
    )
    made = Provisioner.from_settings(settings)
    assert made is not None
    return made


async def _login(postgres: EmbeddedPostgres, user: str, password: str, database: str, *, socket: bool = False) -> None:
    host = str(postgres.socket_dir) if socket else "127.0.0.1"
    conn = await asyncpg.connect(host=host, port=postgres.port, user=user, password=password, database=database)
    try:
        assert await conn.fetchval("SELECT current_user") == user
    finally:
        await conn.close()


async def _refused(postgres: EmbeddedPostgres, user: str, password: str, database: str, *, socket: bool = False) -> str:
    with pytest.raises(asyncpg.PostgresError) as refused:
        await _login(postgres, user, password, database, socket=socket)
    return str(refused.value)


@session_loop
async def test_a_bots_role_reaches_its_own_database_and_nothing_else(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    p = provisioner(postgres, tmp_path)
    mine, other = database_name(uuid.uuid4()), database_name(uuid.uuid4())
    mine_password, other_password = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await p.create(mine, mine_password)
    await p.create(other, other_password)
    try:
        await _login(postgres, mine, mine_password, mine)
        # Its role may create Freqtrade's tables in its database (it owns it).
        conn = await asyncpg.connect(bot_url(mine, mine_password, "127.0.0.1", postgres.port).replace("+psycopg", ""))
        await conn.execute("CREATE TABLE trades (id integer primary key)")
        await conn.execute("INSERT INTO trades VALUES (1)")
        assert await conn.fetchval("SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user") == CONNECTION_LIMIT
        await conn.close()
        # Not another bot's database, not Freqfleet's, not the server's own, not over the Unix socket (a bot that
        # finds it), not with another bot's password.
        for database in (other, postgres.database, "postgres", "template1"):
            assert "no pg_hba.conf entry" in await _refused(postgres, mine, mine_password, database)
        assert "no pg_hba.conf entry" in await _refused(postgres, mine, mine_password, mine, socket=True)
        assert "password authentication failed" in await _refused(postgres, mine, other_password, mine)
        # Nobody else may connect to it: CONNECT is revoked from PUBLIC (what guards it on a server whose
        # pg_hba.conf lets every role in everywhere), the app role included.
        app = await asyncpg.connect(postgres.url().replace("postgresql+asyncpg", "postgresql"))
        try:
            assert await app.fetchval("SELECT has_database_privilege($1, $2, 'CONNECT')", APP_ROLE, mine) is False
            assert await app.fetchval("SELECT has_database_privilege($1, $2, 'CONNECT')", other, mine) is False
        finally:
            await app.close()

        # The provisioner backs it up (it is a member of the bot's role), then drops it and the role.
        backup = await p.backup(mine, uuid.uuid4())
        assert backup.stat().st_mode & 0o777 == 0o600
        listing = await asyncio.create_subprocess_exec(
            pg_tool("pg_restore"), "--list", str(backup), stdout=asyncio.subprocess.PIPE
        )
        assert "TABLE DATA public trades" in (await listing.communicate())[0].decode()
        await p.drop(mine)
        assert "password authentication failed" in await _refused(postgres, mine, mine_password, mine)  # no role
    finally:
        await p.drop(mine)
        await p.drop(other)


@session_loop
async def test_the_password_is_sealed_at_rest_and_opens_only_on_its_gateway(tmp_path: Path) -> None:
    keys = MasterKeys.parse(f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}")
    bot_id = uuid.uuid4()
    secret = secrets.token_urlsafe(32)
    row = BotDatabase(bot_id=bot_id, name=database_name(bot_id), host="db.internal", port=5432, password_version=3)
    sealed = keys.seal(secret.encode(), f"bot-database:{bot_id}:{row.name}".encode())
    row.key_id, row.ciphertext = sealed.key_id, sealed.blob
    assert secret.encode() not in row.ciphertext
    assert password(keys, row) == secret

    gateway = X25519PrivateKey.generate()
    public = base64.b64encode(gateway.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    box = sealed_for(keys, row, "gw-1", public)
    assert box.revision == f"{row.name}:3"
    assert secret not in box.model_dump_json()
    url = open_database(gateway, box, "gw-1", bot_id)
    assert url == f"postgresql+psycopg://{row.name}:{secret}@db.internal:5432/{row.name}"
    with pytest.raises(Exception, match="sealed for gateway gw-1"):
        open_database(gateway, box, "gw-2", bot_id)
    with pytest.raises(Exception, match="does not open"):
        open_database(X25519PrivateKey.generate(), box, "gw-1", bot_id)


@session_loop
async def test_a_server_that_does_not_answer_is_a_503_a_person_can_act_on(tmp_path: Path) -> None:
    settings = ManagementSettings(
        env=Environment.test,
        data_dir=tmp_path,
        bot_db="postgres",
        bot_db_admin_url=SecretStr(f"postgresql://p:secret@127.0.0.1:{free_port()}/postgres"),
        bot_db_host="db.internal:6432",
    )
    p = Provisioner.from_settings(settings)
    assert p is not None
    assert (p.host, p.port) == ("db.internal", 6432)  # what the gateways are told, not what the provisioner uses
    with pytest.raises(BotDatabaseRefused) as refused:
        await p.create(database_name(uuid.uuid4()), secrets.token_urlsafe(32))
    assert refused.value.status == 503
    assert "does not answer" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_settings_say_what_postgres_needs(tmp_path: Path) -> None:
    assert Provisioner.from_settings(ManagementSettings(env=Environment.test, data_dir=tmp_path)) is None
    with pytest.raises(ValueError, match="FREQFLEET_BOT_DB_ADMIN_URL"):
        ManagementSettings(env=Environment.test, data_dir=tmp_path, bot_db="postgres")
    socket_only = ManagementSettings(
        env=Environment.test,
        data_dir=tmp_path,
        bot_db="postgres",
        bot_db_admin_url=SecretStr("postgresql://p:x@/postgres?host=/run/postgresql"),
    )
    with pytest.raises(ValueError, match="FREQFLEET_BOT_DB_HOST"):
        Provisioner.from_settings(socket_only)


@session_loop
async def test_a_bot_with_a_database_is_not_deleted_without_a_provisioner() -> None:
    bot_id = uuid.uuid4()
    row = BotDatabase(bot_id=bot_id, name=database_name(bot_id), host="h", port=1, key_id="k", ciphertext=b"x")
    with pytest.raises(BotDatabaseRefused) as refused:
        await backup_before_delete(None, row)
    assert refused.value.status == 409
    assert "FREQFLEET_BOT_DB_ADMIN_URL" in str(refused.value)
