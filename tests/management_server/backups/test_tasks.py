"""Scheduled backups run once per period over every worker: two workers that each run Celery beat both fire the
task, and the database lets one of them make the period's backup (a real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from management_server.backups.tasks import SCHEDULE_NAME, claim_period
from management_server.config import ManagementSettings


def test_a_period_is_claimed_once_and_the_next_one_again(management_settings: ManagementSettings) -> None:
    url = management_settings.database_url.get_secret_value()
    every = timedelta(hours=6)
    at = datetime(2026, 12, 6, 7, 30, tzinfo=UTC)
    first = claim_period(url, SCHEDULE_NAME, every, at)
    assert first == datetime(2026, 12, 6, 6, 0, tzinfo=UTC)  # periods counted from the epoch
    assert claim_period(url, SCHEDULE_NAME, every, at + timedelta(hours=4)) is None  # another worker, same period
    assert claim_period(url, "another-job", every, at) == first  # each job its own
    assert claim_period(url, SCHEDULE_NAME, every, at + timedelta(hours=5)) == datetime(2026, 12, 6, 12, tzinfo=UTC)
