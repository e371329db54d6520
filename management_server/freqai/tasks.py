"""Training as a Celery task (``freqfleet.models.train``), and how the server sends it.

The task takes a version id (a row ``queued`` by ``POST /api/v1/models/train``) and:

1. takes a PostgreSQL advisory lock on the version, on a connection it keeps for the whole run: a second
   delivery of the same task while the first still runs (a broker redelivery) finds it taken and stops. A
   worker that dies drops its connection, and the lock with it;
2. checks the row: a version already ``succeeded`` (or ``failed``) is left alone, so a redelivered task never
   registers it twice; otherwise it is marked ``running`` and its ``attempts`` counted (a training interrupted
   :data:`MAX_ATTEMPTS` times is failed: something kills the worker each time);
3. stops what an interrupted attempt left running (Freqtrade runs in its own process group, which a killed
   worker does not take down) and starts from an empty work folder ``<data dir>/model-training/<id>``;
4. runs :func:`shared.freqai.training.train_model` against the exchange (the simulator's URL is the setting
   the strategy checks use, ``FREQFLEET_SIMULATOR_URL``), writing its progress into the row (and the task's
   Celery state) as Freqtrade logs it;
5. packs the bundle, encrypts it into the model store under the version id, and registers it on the row
   (sha256, size, features, pairs, trained range, metrics) under the row's lock; or stores ``failed`` with the
   reason and the tail of Freqtrade's log.

Late acks (the task is acknowledged once it ended) and ``task_reject_on_worker_lost`` (a pool process
killed mid-task puts the task back on the queue) make a lost worker's training run again; the steps above
make that safe. Database access is asynchronous (one asyncio loop for the run; the training itself runs in a
thread), on connections without a pool, like the strategy checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psutil
from celery import Celery, Task
from sqlalchemy import text, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

import management_server.orm  # noqa: F401  (the whole schema: a worker imports no other model)
from management_server.config import ManagementSettings
from management_server.freqai.models import ModelStatus, ModelVersion
from management_server.freqai.service import describe, example_source, register_trained, training_request
from management_server.freqai.store import ModelStore
from management_server.security.crypto import MasterKeys
from management_server.strategies.models import Strategy, StrategyStatus
from management_server.strategies.tasks import host_sandbox
from management_server.users.models import Role, User
from shared.freqai.bundle import BundleError
from shared.freqai.training import TrainingFailed, TrainingProgress, train_model
from shared.logging import get_logger
from shared.metrics import TRAINING_SECONDS
from shared.sandbox.host import UnsandboxedRefused

log = get_logger(__name__)

TRAIN_TASK = "freqfleet.models.train"
TRAINING_WORKDIR = "model-training"
MAX_ATTEMPTS = 3
MAX_RETRIES = 3
SEND_TIMEOUT = 5.0
RETRYABLE = (OperationalError, InterfaceError, ConnectionError, TimeoutError)

Report = Callable[[dict[str, Any]], None]


def master_keys(settings: ManagementSettings) -> MasterKeys:
    """The master keys, as the management server loads them (a worker and the server must share them)."""
    if settings.master_keys is not None:
        return MasterKeys.parse(settings.master_keys.get_secret_value())
    return MasterKeys.from_file(settings.data_dir / "master.keys")


def training_dir(settings: ManagementSettings, model_id: uuid.UUID) -> Path:
    return settings.data_dir / TRAINING_WORKDIR / str(model_id)


@asynccontextmanager
async def _engine(settings: ManagementSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(
        settings.database_url.get_secret_value(),
        poolclass=NullPool,
        connect_args={"timeout": 5, "server_settings": {"application_name": "freqfleet-worker"}},
    )
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


def _lock_key(model_id: uuid.UUID) -> str:
    return f"model-training:{model_id}"


@asynccontextmanager
async def _training_lock(settings: ManagementSettings, model_id: uuid.UUID) -> AsyncIterator[bool]:
    """Hold the version's advisory lock on a connection of its own (autocommit: no transaction stays open)."""
    engine = create_async_engine(
        settings.database_url.get_secret_value(),
        poolclass=NullPool,
        connect_args={"timeout": 5, "server_settings": {"application_name": "freqfleet-worker-lock"}},
    )
    try:
        async with engine.connect() as raw:
            conn: AsyncConnection = await raw.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(
                await conn.scalar(
                    text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": _lock_key(model_id)}
                )
            )
            try:
                yield got
            finally:
                if got:
                    with contextlib.suppress(Exception):
                        await conn.execute(
                            text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": _lock_key(model_id)}
                        )
    finally:
        await engine.dispose()


def _progress_document(progress: TrainingProgress) -> dict[str, Any]:
    return {
        "step": progress.step,
        "pairs_done": progress.pairs_done,
        "pairs_total": progress.pairs_total,
        "fraction": round(progress.fraction, 3),
        "pair": progress.pair,
    }


def stop_leftovers(workdir: Path) -> int:
    """Kill the process groups of what an interrupted attempt left running in ``workdir``; how many."""
    marker = str(workdir)
    killed = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if marker not in cmdline or proc.pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            killed += 1
    if killed:
        psutil.wait_procs(
            [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info.get("cmdline") or [])], timeout=10
        )
    return killed


async def _claim(
    sessionmaker: async_sessionmaker[AsyncSession], model_id: uuid.UUID, task_id: str | None
) -> str | None:
    """Mark the version running for a new attempt; None when it should run, else why not."""
    async with sessionmaker() as session:
        model = await session.get(ModelVersion, model_id, with_for_update=True)
        if model is None:
            return "the model version was deleted"
        if model.status == ModelStatus.succeeded:
            return "the model version is registered already"
        if model.status == ModelStatus.failed:
            return "the model version failed already"
        if model.attempts >= MAX_ATTEMPTS:
            model.status = ModelStatus.failed.value
            model.error = (
                f"The training was interrupted {model.attempts} times (the worker running it was lost each time: "
                "out of memory?). Train it again with fewer pairs or days, or ask an administrator."
            )
            model.finished_at = datetime.now(UTC)
            await session.commit()
            return "too many interrupted attempts"
        model.status = ModelStatus.running.value
        model.attempts += 1
        model.started_at = model.started_at or datetime.now(UTC)
        model.task_id = task_id or model.task_id
        model.progress = {"step": "download", "pairs_done": 0, "pairs_total": len(model.pairs), "fraction": 0}
        model.error = None
        await session.commit()
        return None


async def _set_progress(
    sessionmaker: async_sessionmaker[AsyncSession], model_id: uuid.UUID, doc: dict[str, Any]
) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == model_id, ModelVersion.status == ModelStatus.running.value)
            .values(progress=doc, updated_at=datetime.now(UTC))
        )


async def _fail(
    sessionmaker: async_sessionmaker[AsyncSession], model_id: uuid.UUID, reason: str, log_tail: list[str] | None
) -> bool:
    async with sessionmaker() as session:
        model = await session.get(ModelVersion, model_id, with_for_update=True)
        if model is None or model.status not in (ModelStatus.running, ModelStatus.queued):
            return False
        model.status = ModelStatus.failed.value
        model.error = reason[:4000]
        model.log_tail = log_tail
        model.finished_at = datetime.now(UTC)
        await session.commit()
        return True


async def _refusal(session: AsyncSession, model: ModelVersion, settings: ManagementSettings) -> str | None:
    """Why this training may not run (None: it may): only an approved strategy, exactly as approved, on a host
    whose sandbox holds it — re-checked here, so a task written straight into Redis gets no further."""
    if model.strategy_source is None:
        return "The training has no strategy to run."
    if model.strategy_id is None:  # Freqfleet's own example strategy, exactly as shipped
        return None if model.strategy_source == example_source() else "The training's strategy is not the example."
    strategy = await session.get(Strategy, model.strategy_id)
    if strategy is None or strategy.status != StrategyStatus.approved:
        return "The strategy is not approved (or was deleted): only approved strategies are trained."
    digest = hashlib.sha256(model.strategy_source.encode()).hexdigest()
    if not (digest == model.strategy_sha256 == strategy.sha256):
        return "The strategy changed since the training was requested: request it again."
    uploader = await session.get(User, strategy.owner_id)
    try:
        host_sandbox(settings).check_allowed(uploader is not None and uploader.role == Role.admin, "the training")
    except UnsandboxedRefused as exc:
        return str(exc)
    return None


async def run_training(
    settings: ManagementSettings, model_id: uuid.UUID, task_id: str | None = None, report: Report | None = None
) -> dict[str, Any]:
    """The task's work (see the module's docstring); what the task reports."""
    bound = log.bind(model_id=str(model_id))
    async with _training_lock(settings, model_id) as got, _engine(settings) as sessionmaker:
        if not got:
            bound.info("training skipped: another attempt holds it")
            return {"model_id": str(model_id), "skipped": "another attempt of this training is running"}
        skipped = await _claim(sessionmaker, model_id, task_id)
        if skipped is not None:
            bound.info("training skipped", reason=skipped)
            return {"model_id": str(model_id), "skipped": skipped}
        async with sessionmaker() as session:
            model = await session.get(ModelVersion, model_id)
            assert model is not None
            attempt = model.attempts
            exchange = model.exchange or "simulator"
            refused = await _refusal(session, model, settings)
            if refused is not None:
                bound.warning("training refused", reason=refused)
                await _fail(sessionmaker, model_id, refused, None)
                return {"model_id": str(model_id), "status": "failed", "reason": refused}
            try:
                request = training_request(model)
            except ValueError as exc:
                await _fail(sessionmaker, model_id, str(exc), None)
                return {"model_id": str(model_id), "status": "failed"}
        workdir = training_dir(settings, model_id)
        leftovers = await asyncio.to_thread(stop_leftovers, workdir)
        await asyncio.to_thread(shutil.rmtree, workdir, True)
        bound.info("training started", attempt=attempt, leftovers_stopped=leftovers, pairs=list(request.pairs))
        loop = asyncio.get_running_loop()

        def on_progress(progress: TrainingProgress) -> None:
            doc = _progress_document(progress)
            try:
                asyncio.run_coroutine_threadsafe(_set_progress(sessionmaker, model_id, doc), loop).result(timeout=10)
            except Exception as exc:  # progress is for watchers: never fail a training for it
                bound.warning("could not store training progress", error=f"{type(exc).__name__}: {exc}")
            if report is not None:
                report(doc)

        started = time.monotonic()
        outcome: str | None = None  # for freqfleet_model_training_seconds
        try:
            try:
                result = await asyncio.to_thread(
                    train_model,
                    request,
                    workdir=workdir / "run",
                    exchange=exchange,
                    simulator_url=settings.check_simulator_url,
                    timeout=settings.model_training_timeout,
                    progress=on_progress,
                    sandbox=host_sandbox(settings),
                )
                await _set_progress(
                    sessionmaker,
                    model_id,
                    {
                        **_progress_document(TrainingProgress("done", len(request.pairs), len(request.pairs))),
                        "step": "pack",
                    },
                )
                packed = await asyncio.to_thread(result.pack, workdir / "bundle.tar.zst")
                if packed.size > settings.model_max_bundle_bytes:
                    raise BundleError(
                        f"the bundle is {packed.size} bytes, more than FREQFLEET_MODEL_MAX_BUNDLE_BYTES "
                        f"({settings.model_max_bundle_bytes})"
                    )
                store = ModelStore(settings.model_store, master_keys(settings))
                stored = await asyncio.to_thread(store.put_file, model_id, packed.path)
            except TrainingFailed as exc:
                await _fail(sessionmaker, model_id, exc.reason, exc.log_tail)
                outcome = "failed"
                bound.info("training failed", reason=exc.reason)
                return {"model_id": str(model_id), "status": "failed", "reason": exc.reason}
            except (ValueError, BundleError) as exc:
                reason = f"The training can't run: {exc}"
                await _fail(sessionmaker, model_id, reason, None)
                outcome = "failed"
                return {"model_id": str(model_id), "status": "failed", "reason": reason}
            except RETRYABLE:
                raise
            except Exception as exc:  # our fault, not the request's: say so rather than leave it "running"
                bound.exception("training crashed")
                reason = (
                    f"The training itself failed ({type(exc).__name__}: {exc}). This says nothing about the strategy: "
                    "train again, or tell an administrator if it keeps failing."
                )
                await _fail(sessionmaker, model_id, reason, None)
                outcome = "failed"
                return {"model_id": str(model_id), "status": "failed", "reason": reason}
            # The bundle is in the store: the work folder goes before the version says "succeeded", so whoever sees
            # that sees the attempt finished (the finally below is for the other ways out).
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            async with sessionmaker() as session:
                model = await session.get(ModelVersion, model_id, with_for_update=True)
                if model is None or model.status != ModelStatus.running:
                    bound.info("trained model not registered: the version changed meanwhile")
                    return {"model_id": str(model_id), "skipped": "the version changed while it trained"}
                register_trained(model, result, packed.manifest, packed.sha256, packed.size, stored)
                await session.commit()
                outcome = "succeeded"
                bound.info(
                    "model registered",
                    model=describe(model),
                    sha256=packed.sha256,
                    size=packed.size,
                    compressed_size=stored.plain_size,
                    seconds=result.seconds,
                )
        finally:
            if outcome is not None:  # the worker serves it at its /metrics (FREQFLEET_WORKER_METRICS_PORT)
                TRAINING_SECONDS.labels(outcome).observe(time.monotonic() - started)
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    return {"model_id": str(model_id), "status": "succeeded", "sha256": packed.sha256, "attempt": attempt}


async def give_up(settings: ManagementSettings, model_id: uuid.UUID, reason: str) -> None:
    async with _engine(settings) as sessionmaker:
        await _fail(sessionmaker, model_id, reason, None)


def register_train_task(app: Celery, settings: ManagementSettings) -> None:
    """Add ``freqfleet.models.train`` to ``app``."""

    @app.task(
        name=TRAIN_TASK,
        bind=True,
        shared=False,  # each app its own task, closed over its own settings
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=MAX_RETRIES,
        time_limit=int(settings.model_training_timeout) + 600,  # a last resort: the training has its own timeout
    )
    def train(self: Task[Any, Any], model_id: str) -> dict[str, Any]:
        """Train a queued model version and register its bundle (idempotent per version)."""

        task_id = self.request.id  # the training reports from its own thread, where Celery's request is empty

        def report(doc: dict[str, Any]) -> None:
            try:
                self.update_state(task_id=task_id, state="PROGRESS", meta={"model_id": model_id, **doc})
            except Exception as exc:  # progress is for watchers; a Redis hiccup must not fail the training
                log.warning("could not report training progress", error=f"{type(exc).__name__}: {exc}")

        version = uuid.UUID(model_id)
        try:
            return asyncio.run(run_training(settings, version, self.request.id, report))
        except RETRYABLE as exc:  # the database out of reach for a moment: again later (the task is idempotent)
            if self.request.retries < MAX_RETRIES:
                raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from None
            with contextlib.suppress(Exception):
                asyncio.run(give_up(settings, version, f"The training could not reach the database: {exc}"))
            raise


def send_training(app: Celery, model_id: uuid.UUID) -> str:
    """Publish a training task (blocking: call it off the event loop); its task id."""
    result = app.send_task(
        TRAIN_TASK,
        args=[str(model_id)],
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    )
    return str(result.id)


class TrainQueue:
    """Sends training tasks from the event loop without blocking it: one thread of its own and a Celery app of its
    own (so its producer is never used from two threads), a bounded wait."""

    def __init__(self, celery: Celery, timeout: float = SEND_TIMEOUT) -> None:
        self.celery = celery
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-train-send")

    async def send(self, model_id: uuid.UUID) -> str | None:
        """The task id, or None when the broker did not take the task (logged)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, partial(send_training, self.celery, model_id)), self.timeout
            )
        except Exception as exc:
            log.warning("could not queue a training", model_id=str(model_id), error=f"{type(exc).__name__}: {exc}")
            return None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.celery.close()
