"""``freqfleet backup`` and ``freqfleet restore``: the archive format is ``management_server/backups``;
this adds the embedded default (the PostgreSQL of the data dir, started for the job when it does not
run) and the schema upgrade after a restore."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from freqfleet import database
from freqfleet.embedded import EmbeddedPostgres
from management_server.backups import archive
from management_server.botdb import service as botdb
from management_server.botdb.models import BotDatabase
from management_server.botdb.service import Provisioner
from management_server.config import ManagementSettings
from management_server.security.crypto import MasterKeys


def external_database() -> bool:
    return "DATABASE_URL" in os.environ or "FREQFLEET_DATABASE_URL" in os.environ


def _postmaster_running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        return psutil.pid_exists(pid) and "postgres" in psutil.Process(pid).name()
    except (OSError, ValueError, IndexError, psutil.Error):
        return False


@contextmanager
def database_urls(settings: ManagementSettings) -> Iterator[tuple[str, str | None]]:
    """The database, and the bots' trade databases' server as its provisioning role (None when not set): DATABASE_URL's
    and FREQFLEET_BOT_DB_ADMIN_URL's, or the embedded server of the data dir (started for the job, then stopped, when
    ``freqfleet up`` is not running it)."""
    if external_database():
        bots = settings.bot_db_admin_url
        yield settings.database_url.get_secret_value(), None if bots is None else bots.get_secret_value()
        return
    server = EmbeddedPostgres(settings.data_dir)
    running = _postmaster_running(server.pgdata)
    server.start()
    try:
        yield server.url(), server.provisioner_url(socket=True)
    finally:
        if not running:
            server.stop()


def _bot_database_maker(database_url: str, bots_url: str, keys: MasterKeys) -> Callable[[str], None]:
    """Makes a restored bot's database and role again, with the password the restored database keeps for it."""
    provisioner = Provisioner(admin_url=bots_url, host="", port=0, backups=Path())

    def make(name: str) -> None:
        found = archive.query(
            database_url,
            f"SELECT bot_id, key_id, encode(ciphertext, 'base64') FROM bot_databases WHERE name = '{name}'",  # noqa: S608
        )
        if not found:
            raise archive.BackupError(f"the archive has a dump of {name}, and its database no record of it")
        bot_id, key_id, sealed = found.split("|")
        row = BotDatabase(bot_id=uuid.UUID(bot_id), name=name, key_id=key_id, ciphertext=base64.b64decode(sealed))
        asyncio.run(provisioner.create(name, botdb.password(keys, row)))

    return make


def backup_key(settings: ManagementSettings) -> bytes:
    key = settings.backup_passphrase(create=True)
    if key is None:
        raise archive.BackupError(
            f"no backup key: {settings.backup_key_file} is missing or empty (set FREQFLEET_BACKUP_KEY_FILE to the "
            "file that holds it, or FREQFLEET_BACKUP_KEY)"
        )
    return key


def backup(settings: ManagementSettings, output: Path | None) -> Path:
    key = backup_key(settings)
    with database_urls(settings) as (url, bots_url):
        return archive.create_backup(
            url,
            archive.backup_set(settings.data_dir, settings.backup_sources()),
            output or settings.backups,
            key,
            bots_url=bots_url,
        )


def restore(settings: ManagementSettings, path: Path, *, trust_unencrypted: bool = False) -> dict[str, Any]:
    """Open (decrypt and authenticate) and check the archive, then restore it into the (fresh) data dir and its
    (empty) database."""
    key = settings.backup_passphrase(create=False)
    with archive.opened(path, key, trust_unencrypted=trust_unencrypted) as plain:
        manifest = archive.verify(plain)
        data_dir = settings.data_dir.resolve()
        archive.check_targets(manifest, data_dir)
        if not external_database() and (data_dir / "postgres").exists() and any((data_dir / "postgres").iterdir()):
            raise archive.BackupError(
                f"{data_dir / 'postgres'} holds a database already: restore into a fresh FREQFLEET_DATA_DIR"
            )
        with database_urls(settings) as (url, bots_url):
            archive.restore_database(plain, url)
            database.upgrade(url)  # an archive of an older version comes up to this version's schema
            placed = archive.restore_files(plain, manifest, data_dir)
            bots: list[str] = []
            if manifest.get("bot_databases"):
                if bots_url is None:
                    raise archive.BackupError(
                        "the archive holds bots' trade databases: set FREQFLEET_BOT_DB_ADMIN_URL to the server that "
                        "receives them (a role with CREATEDB and CREATEROLE)"
                    )
                keys = (
                    MasterKeys.parse(settings.master_keys.get_secret_value())
                    if settings.master_keys is not None
                    else MasterKeys.from_file(data_dir / "master.keys")
                )
                make = _bot_database_maker(url, bots_url, keys)
                bots = archive.restore_bot_databases(plain, manifest, bots_url, make)
    return {"manifest": manifest, "placed": placed, "data_dir": data_dir, "bot_databases": bots}
