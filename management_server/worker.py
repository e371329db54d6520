"""The Celery worker of the management server (model training, strategy checks, backups).

Tasks live with their domains and are registered here. The broker and the result
backend are the same Redis as the bus.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_shutdown

from management_server import worker_metrics
from management_server.backups.tasks import register_backup_task
from management_server.config import ManagementSettings, get_settings
from management_server.freqai.tasks import register_train_task
from management_server.strategies.tasks import register_check_task
from shared.logging import configure_logging
from shared.redis import celery_urls

PING_TASK = "freqfleet.ping"


def create_celery(settings: ManagementSettings | None = None, *, results: bool = True) -> Celery:
    """The Celery app with our tasks. ``results=False`` for a process that only sends tasks: Celery's Redis
    result backend subscribes to the result channel of every task sent through it, which a sender that
    never waits for a result would accumulate (workers store states and results either way)."""
    settings = settings or get_settings()
    url, transport = celery_urls(settings.redis_url.get_secret_value())  # a Sentinel URL: kombu's Sentinel transport
    app = Celery("freqfleet", broker=url, backend=url if results else None, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
        timezone="UTC",
    )

    @app.task(name=PING_TASK, shared=False)
    def ping() -> dict[str, Any]:
        """Proves a worker takes tasks off the broker: who answered, and when."""
        return {"hostname": socket.gethostname(), "at": datetime.now(UTC).isoformat()}

    register_check_task(app, settings)
    register_backup_task(app, settings)
    register_train_task(app, settings)
    return app


def run() -> None:
    """Run a worker (``freqfleet worker``)."""
    settings = get_settings()

    @setup_logging.connect
    def _keep_our_logging(**_: Any) -> None:
        configure_logging("worker", settings.log_level, settings.log_format)

    configure_logging("worker", settings.log_level, settings.log_format)
    if settings.worker_metrics_port is not None and os.environ.get(worker_metrics.DIR_ENV):
        # freqfleet worker prepared the multiprocess folder before anything imported prometheus_client.
        worker_metrics.serve(settings.worker_metrics_host, settings.worker_metrics_port)

        @worker_process_shutdown.connect(weak=False)
        def _pool_process_ended(**_: Any) -> None:
            worker_metrics.process_ended(os.getpid())

    if settings.worker_beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule there
    app = create_celery(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level.upper()}",
            f"--concurrency={settings.celery_concurrency}",
            f"--hostname=freqfleet@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            # Celery beat, the scheduler of periodic tasks (backups), on the one worker that is asked to run it.
            *(["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"] if settings.worker_beat else []),
        ]
    )
