"""Scheduled backups: a Celery task run by Celery beat every ``backup_interval_hours``, keeping the
``backup_keep`` newest archives (``freqfleet backup`` runs the same thing by hand)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from management_server.backups.archive import BackupError, backup_set, create_backup, prune
from management_server.config import ManagementSettings
from shared.metrics import BACKUPS

BACKUP_TASK = "freqfleet.backups.create"
SCHEDULE_NAME = "freqfleet-backup"


def run_backup(settings: ManagementSettings, *, keep: int | None = None) -> dict[str, Any]:
    """One backup into ``settings.backups``, then the retention; what happened."""
    try:
        key = settings.backup_passphrase(create=True)
        if key is None:
            raise BackupError(f"no backup key: {settings.backup_key_file} is missing or empty")
        archive = create_backup(
            settings.database_url.get_secret_value(),
            backup_set(settings.data_dir, settings.backup_sources()),
            settings.backups,
            key,
            bots_url=None if settings.bot_db_admin_url is None else settings.bot_db_admin_url.get_secret_value(),
        )
    except Exception:
        BACKUPS.labels(outcome="failed").inc()
        raise
    BACKUPS.labels(outcome="succeeded").inc()
    deleted = prune(settings.backups, keep if keep is not None else settings.backup_keep)
    return {"archive": str(archive), "bytes": archive.stat().st_size, "deleted": [p.name for p in deleted]}


def register_backup_task(app: Celery, settings: ManagementSettings) -> None:
    @app.task(name=BACKUP_TASK, shared=False, acks_late=False)
    def scheduled_backup() -> dict[str, Any]:
        return run_backup(settings)

    if settings.backup_interval_hours > 0:
        schedule = dict(app.conf.beat_schedule or {})
        schedule[SCHEDULE_NAME] = {"task": BACKUP_TASK, "schedule": timedelta(hours=settings.backup_interval_hours)}
        app.conf.beat_schedule = schedule
