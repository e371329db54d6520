"""``freqfleet backup`` and ``freqfleet restore``: the archive format is ``management_server/backups``;
this adds the embedded default (the PostgreSQL of the data dir, started for the job when it does not
run) and the schema upgrade after a restore."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from freqfleet import database
from freqfleet.embedded import EmbeddedPostgres
from management_server.backups import archive
from management_server.config import ManagementSettings


def external_database() -> bool:
    return "DATABASE_URL" in os.environ or "FREQFLEET_DATABASE_URL" in os.environ


def _postmaster_running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        return psutil.pid_exists(pid) and "postgres" in psutil.Process(pid).name()
    except (OSError, ValueError, IndexError, psutil.Error):
        return False


@contextmanager
def database_url(settings: ManagementSettings) -> Iterator[str]:
    """The database: DATABASE_URL's, or the embedded server of the data dir (started for the job, then
    stopped, when ``freqfleet up`` is not running it)."""
    if external_database():
        yield settings.database_url.get_secret_value()
        return
    server = EmbeddedPostgres(settings.data_dir)
    running = _postmaster_running(server.pgdata)
    server.start()
    try:
        yield server.url()
    finally:
        if not running:
            server.stop()


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
    with database_url(settings) as url:
        return archive.create_backup(
            url, archive.backup_set(settings.data_dir, settings.backup_sources()), output or settings.backups, key
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
        with database_url(settings) as url:
            archive.restore_database(plain, url)
            database.upgrade(url)  # an archive of an older version comes up to this version's schema
            placed = archive.restore_files(plain, manifest, data_dir)
    return {"manifest": manifest, "placed": placed, "data_dir": data_dir}
