"""The Celery worker's ``/metrics``: what its tasks count (training durations, backups), for Prometheus.

Tasks run in the worker's pool processes, not in the process that would serve HTTP, so the worker uses
prometheus_client's multiprocess mode: every process writes its metrics to files in a folder, and the
worker's main process serves their sum (``MultiProcessCollector``). The folder must be known before
``prometheus_client`` is first imported, so ``freqfleet worker`` calls :func:`prepare` before anything
else; it is emptied at each start (the figures of a dead worker would otherwise be added again).
Off unless ``FREQFLEET_WORKER_METRICS_PORT`` is set (``freqfleet up`` sets 8003).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

PORT_ENV = "FREQFLEET_WORKER_METRICS_PORT"
DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Point prometheus_client at a fresh folder when the worker serves metrics (call before importing it)."""
    if not environ.get(PORT_ENV):
        return None
    folder = Path(environ.get(DIR_ENV) or tempfile.mkdtemp(prefix="freqfleet-worker-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    environ[DIR_ENV] = str(folder)
    return folder


def serve(host: str, port: int) -> None:
    """Serve the sum of every worker process's metrics at ``http://host:port/metrics`` (a daemon thread)."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def process_ended(pid: int) -> None:
    """A pool process ended: its gauges go (its counters stay counted)."""
    if os.environ.get(DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
