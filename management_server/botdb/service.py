"""Making, opening and dropping each bot's trade database (``FREQFLEET_BOT_DB=postgres``).

The :class:`Provisioner` speaks to the bots' PostgreSQL server as a role with ``CREATEDB`` and ``CREATEROLE`` (no
superuser). For each bot it makes a role and a database of one name (:func:`shared.trade_db.database_name`), the role
owning the database, ``CONNECT`` on it revoked from everyone else, at most :data:`CONNECTION_LIMIT` sessions; the
provisioner makes itself a member of the role, so that it can dump the bot's tables, end its sessions and drop its
database later. The role's password is random, sealed at rest with the master key (:class:`BotDatabase`), and leaves
the management server only sealed to the gateway that runs the bot (:func:`sealed_for`).

A bot's database is made in the transaction that creates the bot (dropped again if that fails) and, when the bot is
deleted, dumped (``pg_dump --format=custom``, 0600 under ``<data dir>/backups/bot-databases``) and then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.backups.archive import pg_tool
from management_server.botdb.models import BotDatabase
from management_server.bots.models import Bot
from management_server.config import ManagementSettings
from management_server.errors import Refused
from management_server.security.crypto import MasterKeys, Sealed
from shared.bus.messages import SealedDatabase
from shared.logging import get_logger
from shared.sealing import seal_database
from shared.trade_db import bot_url, database_name, is_bot_database

log = get_logger(__name__)

CONNECTION_LIMIT = 20  # Freqtrade's pool (5 + 10 overflow) and its API's threads fit; a strategy can't take the server
CONNECT_TIMEOUT = 10.0
BACKUPS_DIR = "bot-databases"


class BotDatabaseRefused(Refused):
    """The bots' database server could not do what was asked (it says why)."""


def _quoted(name: str) -> str:
    if not is_bot_database(name):  # never anything but ffbot_<hex> reaches a statement
        raise ValueError(f"{name!r} is not a bot's database name")
    return f'"{name}"'


def _literal(password: str) -> str:
    if not password.replace("-", "").replace("_", "").isalnum():
        raise ValueError("a bot's database password is URL-safe Base64")
    return f"'{password}'"


def new_password() -> str:
    return secrets.token_urlsafe(32)


def _libpq_url(url: str) -> str:
    """asyncpg's and libpq's scheme for a SQLAlchemy-style URL."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith(("postgres", "postgresql")) else url


@dataclass(frozen=True)
class Provisioner:
    """The bots' PostgreSQL server, seen by the management server as its provisioning role."""

    admin_url: str
    host: str  # where the gateways (and their bots) reach the server
    port: int
    backups: Path

    @classmethod
    def from_settings(cls, settings: ManagementSettings) -> Provisioner | None:
        """The provisioner FREQFLEET_BOT_DB=postgres asks for; None with SQLite.

        :raises ValueError: postgres without an admin URL, or one naming no host.
        """
        if settings.bot_db != "postgres":
            return None
        if settings.bot_db_admin_url is None:
            raise ValueError(
                "FREQFLEET_BOT_DB=postgres needs FREQFLEET_BOT_DB_ADMIN_URL: a PostgreSQL role with CREATEDB and "
                "CREATEROLE that makes each bot's database (freqfleet up sets it on its embedded server)"
            )
        admin = _libpq_url(settings.bot_db_admin_url.get_secret_value())
        parts = urlsplit(admin)
        host, port = parts.hostname, parts.port or 5432
        if settings.bot_db_host:
            where = urlsplit(f"//{settings.bot_db_host}")
            host, port = where.hostname, where.port or port
        if not host:
            raise ValueError(
                "FREQFLEET_BOT_DB_ADMIN_URL names no host (a Unix socket): bots on other hosts could not reach it; "
                "set FREQFLEET_BOT_DB_HOST to the host:port the gateways reach"
            )
        return cls(admin, host, port, settings.backups / BACKUPS_DIR)

    async def _connect(self) -> Any:
        try:
            return await asyncpg.connect(self.admin_url, timeout=CONNECT_TIMEOUT)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise BotDatabaseRefused(
                503, f"The bots' database server does not answer ({type(exc).__name__}): try again when it is back."
            ) from None

    async def create(self, name: str, password: str) -> None:
        """The role and its database (``CREATE DATABASE`` runs outside any transaction)."""
        db = _quoted(name)
        connection = await self._connect()
        try:
            await connection.execute(
                f"CREATE ROLE {db} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                f"CONNECTION LIMIT {CONNECTION_LIMIT} PASSWORD {_literal(password)}"
            )
            await connection.execute(f"GRANT {db} TO CURRENT_USER")
            await connection.execute(f"CREATE DATABASE {db} OWNER {db}")
            await connection.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
        except asyncpg.PostgresError as exc:
            with contextlib.suppress(asyncpg.PostgresError):
                await self._drop(connection, name)
            raise BotDatabaseRefused(503, f"The bot's trade database could not be made: {exc}") from None
        finally:
            await connection.close()

    async def _drop(self, connection: Any, name: str) -> None:
        db = _quoted(name)
        await connection.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await connection.execute(f"DROP ROLE IF EXISTS {db}")

    async def drop(self, name: str) -> None:
        connection = await self._connect()
        try:
            await self._drop(connection, name)
        except asyncpg.PostgresError as exc:
            raise BotDatabaseRefused(503, f"The bot's trade database could not be dropped: {exc}") from None
        finally:
            await connection.close()

    async def fence(self, name: str, password: str) -> int:
        """Give the bot's role a new password and end every session it has: whoever ran the bot before (a gateway
        that lost it) can't write its trades any more, not even after a reconnect. How many sessions were ended."""
        db = _quoted(name)
        connection = await self._connect()
        try:
            await connection.execute(f"ALTER ROLE {db} PASSWORD {_literal(password)}")
            ended = await connection.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
            )
        except asyncpg.PostgresError as exc:
            raise BotDatabaseRefused(503, f"The bot's database role could not be fenced: {exc}") from None
        finally:
            await connection.close()
        return len(ended)

    async def backup(self, name: str, bot_id: uuid.UUID) -> Path:
        """``pg_dump --format=custom`` of the bot's database into the backups folder (0600); its path."""
        self.backups.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.backups / f"{bot_id}-{stamp}.dump"
        parts = urlsplit(self.admin_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = parts.password or ""
        args = ["--host", parts.hostname or "127.0.0.1", "--port", str(parts.port or 5432)]
        args += ["--username", parts.username or "postgres", "--dbname", name]
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        process = await asyncio.create_subprocess_exec(
            pg_tool("pg_dump"),
            *args,
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            "--file",
            str(target),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        if process.returncode != 0:
            target.unlink(missing_ok=True)
            raise BotDatabaseRefused(
                503, f"The bot's trades could not be backed up, so its database stays: {err.decode()[-500:]}"
            )
        return target


async def rotate(keys: MasterKeys, provisioner: Provisioner, row: BotDatabase) -> int:
    """A new password for the bot's role, its old sessions ended (:meth:`Provisioner.fence`), and the row updated in
    the session (the caller commits; if that fails, the next rotation makes them agree again). Sessions ended."""
    secret = new_password()
    ended = await provisioner.fence(row.name, secret)
    sealed = keys.seal(secret.encode(), _associated(row))
    row.key_id, row.ciphertext = sealed.key_id, sealed.blob
    row.password_version += 1
    return ended


def _associated(row: BotDatabase) -> bytes:
    return f"bot-database:{row.bot_id}:{row.name}".encode()


def password(keys: MasterKeys, row: BotDatabase) -> str:
    return keys.open(Sealed(row.key_id, row.ciphertext), _associated(row)).decode()


def revision(row: BotDatabase) -> str:
    """Which password of the bot's role: a gateway's config changes with it."""
    return f"{row.name}:{row.password_version}"


async def provision(session: AsyncSession, keys: MasterKeys, provisioner: Provisioner, bot: Bot) -> BotDatabase:
    """Make the bot's database and role, and record them in the session (the caller commits; when that fails it
    calls :func:`forget`)."""
    bot_id = bot.id
    name = database_name(bot_id)
    secret = new_password()
    await provisioner.create(name, secret)
    row = BotDatabase(bot_id=bot_id, name=name, host=provisioner.host, port=provisioner.port, password_version=1)
    sealed = keys.seal(secret.encode(), _associated(row))
    row.key_id, row.ciphertext = sealed.key_id, sealed.blob
    session.add(row)
    bot.trade_db = "postgres"
    log.info("bot database made", bot_id=str(bot_id), database=name, host=provisioner.host, port=provisioner.port)
    return row


async def forget(provisioner: Provisioner, bot_id: uuid.UUID) -> None:
    """Drop a database :func:`provision` made for a bot that was then not created."""
    try:
        await provisioner.drop(database_name(bot_id))
    except BotDatabaseRefused as exc:
        log.warning("bot database left behind", bot_id=str(bot_id), error=str(exc))


async def of(session: AsyncSession, bot_id: uuid.UUID) -> BotDatabase | None:
    return await session.get(BotDatabase, bot_id)


async def backup_before_delete(provisioner: Provisioner | None, row: BotDatabase) -> Path:
    """The bot's database dumped before the bot goes (the dump's path); refused without a provisioner."""
    if provisioner is None:
        raise BotDatabaseRefused(
            409,
            f"The bot's trades are in PostgreSQL database {row.name}, and this server has no "
            "FREQFLEET_BOT_DB_ADMIN_URL to back it up and drop it with: set it (and FREQFLEET_BOT_DB=postgres), "
            "then delete the bot.",
        )
    return await provisioner.backup(row.name, row.bot_id)


async def drop_after_delete(provisioner: Provisioner, row: BotDatabase, backup: Path) -> None:
    """Drop a deleted bot's database and role (backed up in ``backup``); one that can't be dropped now is left
    behind, logged: never a bot without its trades."""
    try:
        await provisioner.drop(row.name)
    except BotDatabaseRefused as exc:
        log.warning("bot database left behind", database=row.name, error=str(exc))
        return
    log.info("bot database dropped", bot_id=str(row.bot_id), database=row.name, backup=str(backup))


async def rehome(session: AsyncSession, provisioner: Provisioner) -> int:
    """Point every bot database at the server as the settings name it now (a restored backup, a server that moved);
    how many changed. Run at the management server's start: the gateways are told where it is with each start."""
    result = await session.execute(
        update(BotDatabase)
        .where(or_(BotDatabase.host != provisioner.host, BotDatabase.port != provisioner.port))
        .values(host=provisioner.host, port=provisioner.port)
    )
    moved = int(getattr(result, "rowcount", 0) or 0)
    if moved:
        log.warning("bot databases now on this server", count=moved, host=provisioner.host, port=provisioner.port)
    return moved


def sealed_for(keys: MasterKeys, row: BotDatabase, gateway_id: str, sealing_key: str) -> SealedDatabase:
    """The bot's database URL sealed to the gateway that will run it."""
    url = bot_url(row.name, password(keys, row), row.host, row.port)
    return seal_database(sealing_key, gateway_id, row.bot_id, revision(row), url)
