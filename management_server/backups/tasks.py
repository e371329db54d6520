"""Scheduled backups: a Celery task run by Celery beat every ``backup_interval_hours``, keeping the
``backup_keep`` newest archives (``freqfleet backup`` runs the same thing by hand). Each period's run is claimed in
the database first (``scheduled_runs``), so workers that each run Celery beat make one backup per period between
them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery

from management_server.backups.archive import BackupError, backup_set, create_backup, prune, query
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


def claim_period(database_url: str, job: str, every: timedelta, now: datetime | None = None) -> datetime | None:
    """Claim this period's run of ``job`` (periods of ``every``, counted from the epoch) in the database, for every
    worker at once: the start of the period when this caller got it, None when another had (Celery beat on two
    workers fires each its own schedule)."""
    if not re.fullmatch(r"[a-z0-9-]{1,100}", job):
        raise ValueError(f"not a job name: {job!r}")
    now = now or datetime.now(UTC)
    seconds = every.total_seconds()
    start = datetime.fromtimestamp(now.timestamp() // seconds * seconds, UTC)
    claimed = query(
        database_url,
        "WITH claimed AS (INSERT INTO scheduled_runs (job, period_start) "  # noqa: S608 (our constants, an ISO time)
        f"VALUES ('{job}', '{start.isoformat()}') ON CONFLICT DO NOTHING RETURNING job) SELECT count(*) FROM claimed",
    )
    return start if claimed == "1" else None


def register_backup_task(app: Celery, settings: ManagementSettings) -> None:
    @app.task(name=BACKUP_TASK, shared=False, acks_late=False)
    def scheduled_backup() -> dict[str, Any]:
        every = timedelta(hours=settings.backup_interval_hours)
        if every > timedelta(0):
            period = claim_period(settings.database_url.get_secret_value(), SCHEDULE_NAME, every)
            if period is None:  # another worker's beat ran this period's backup
                return {"skipped": "this period's backup was made by another worker"}
        return run_backup(settings)

    if settings.backup_interval_hours > 0:
        schedule = dict(app.conf.beat_schedule or {})
        schedule[SCHEDULE_NAME] = {"task": BACKUP_TASK, "schedule": timedelta(hours=settings.backup_interval_hours)}
        app.conf.beat_schedule = schedule
