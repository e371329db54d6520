"""The strategy check as a Celery task (``freqfleet.strategies.check``), and how the server sends it.

The task takes a strategy's id and the sha256 of the source it should check. It marks the strategy's
check ``running``, backtests it (``check.run_backtest_check``) and stores ``passed`` or ``failed`` with the
summary or the error in ``check_result``. The strategy's review status is never touched: a failed
check of a strategy pending review stays pending, with the reason in ``check_result``, and an admin
decides. Running it again for the same strategy and sha256 just checks again (late acks: a worker that
dies mid-check leaves the task to another). A strategy deleted or changed in the meantime is skipped.

Database access: the task is synchronous (it waits for freqtrade subprocesses for seconds), and talks
to PostgreSQL in two short ``asyncio.run`` calls, each with its own engine without a pool. This keeps
one driver and one URL for the whole management server: the URL is the asyncpg URL the server uses,
whose query options (``ssl=...``, ...) asyncpg reads differently from libpq, so handing it to psycopg
would work until someone sets one. Two connections per check cost nothing beside a backtest.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

import management_server.orm  # noqa: F401  (the whole schema: a worker imports no other model, and flushes need users)
from management_server.config import ManagementSettings
from management_server.strategies.check import CheckResult, run_backtest_check
from management_server.strategies.models import CheckStatus, Strategy, StrategyStatus
from management_server.users.models import Role, User
from shared.logging import get_logger
from shared.sandbox.host import HostSandbox, UnsandboxedRefused, detect

log = get_logger(__name__)

CHECK_TASK = "freqfleet.strategies.check"
CHECK_TIMEOUT = 300.0
CHECK_DAYS = 7
CHECK_WORKDIR = "strategy-checks"
SEND_TIMEOUT = 5.0
PENDING_REVIEW_NOTE = "The strategy stays pending review: an admin decides whether to approve it."


_HOSTS: dict[tuple[int, bool], HostSandbox] = {}


def host_sandbox(settings: ManagementSettings) -> HostSandbox:
    """The worker's sandbox for user code, probed once per process (see :mod:`shared.sandbox.host`)."""
    key = (settings.sandbox_uid_base, settings.allow_unsandboxed)
    if key not in _HOSTS:
        _HOSTS[key] = detect(settings.sandbox_uid_base, settings.sandbox_limits, settings.allow_unsandboxed)
    return _HOSTS[key]


@asynccontextmanager
async def _session(settings: ManagementSettings) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(
        settings.database_url.get_secret_value(),
        poolclass=NullPool,
        connect_args={"timeout": 5, "server_settings": {"application_name": "freqfleet-worker"}},
    )
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            yield session
    finally:
        await engine.dispose()


async def _start(settings: ManagementSettings, strategy_id: uuid.UUID, sha256: str) -> tuple[str, str, bool] | str:
    """Mark the check running; the strategy's source and class name, or why there is nothing to check."""
    async with _session(settings) as session:
        strategy = await session.get(Strategy, strategy_id, with_for_update=True)
        if strategy is None:
            return "the strategy was deleted"
        if strategy.sha256 != sha256 or hashlib.sha256(strategy.source.encode()).hexdigest() != sha256:
            return "the strategy's source changed"
        # Only approved code runs, even on a worker: a task written straight into Redis gets no further. The one
        # exception is a check an admin queued to decide on a strategy under review (the API marks it queued).
        asked_by_admin = (
            strategy.status == StrategyStatus.pending_review and strategy.check_status == CheckStatus.queued
        )
        if strategy.status != StrategyStatus.approved and not asked_by_admin:
            log.warning("strategy check refused: not approved", strategy_id=str(strategy_id), status=strategy.status)
            return f"the strategy is {strategy.status}, not approved: only approved strategies are run"
        strategy.check_status = CheckStatus.running.value
        await session.commit()
        uploader = await session.get(User, strategy.owner_id)
        return strategy.source, strategy.class_name, uploader is not None and uploader.role == Role.admin


def result_document(result: CheckResult, sha256: str, strategy_status: str) -> dict[str, Any]:
    """What ``check_result`` holds after a check."""
    document: dict[str, Any] = {
        "passed": result.passed,
        "sha256": sha256,
        "checked_at": datetime.now(UTC).isoformat(),
    }
    if result.passed:
        document["summary"] = result.summary
    else:
        document["reason"] = result.reason
        document["error"] = result.error
        if strategy_status == StrategyStatus.pending_review:
            document["review"] = PENDING_REVIEW_NOTE
    return document


async def _finish(settings: ManagementSettings, strategy_id: uuid.UUID, sha256: str, result: CheckResult) -> bool:
    """Store the outcome; False when the strategy was deleted or changed while it was checked."""
    async with _session(settings) as session:
        strategy = await session.get(Strategy, strategy_id, with_for_update=True)
        if strategy is None or strategy.sha256 != sha256:
            return False
        strategy.check_status = (CheckStatus.passed if result.passed else CheckStatus.failed).value
        strategy.check_result = result_document(result, sha256, strategy.status)
        await session.commit()
        return True


def check_strategy(
    settings: ManagementSettings,
    strategy_id: uuid.UUID,
    sha256: str,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The task's work: load, mark running, backtest, store. Returns what the task reports."""
    bound = log.bind(strategy_id=str(strategy_id), sha256=sha256)
    loaded = asyncio.run(_start(settings, strategy_id, sha256))
    if isinstance(loaded, str):
        bound.info("strategy check skipped", reason=loaded)
        return {"strategy_id": str(strategy_id), "skipped": loaded}
    source, class_name, trusted = loaded
    bound.info("strategy check started", class_name=class_name)
    try:
        sandbox = host_sandbox(settings)
        sandbox.check_allowed(trusted, "the strategy check")
        result = run_backtest_check(
            source,
            class_name,
            sandbox=sandbox,
            simulator_url=settings.check_simulator_url,
            workdir=settings.data_dir / CHECK_WORKDIR,
            days=CHECK_DAYS,
            timeout=CHECK_TIMEOUT,
            progress=progress,
        )
    except UnsandboxedRefused as exc:
        bound.warning("strategy check refused: no sandbox on this host")
        result = CheckResult(False, error=str(exc))
    except Exception as exc:  # our fault, not the strategy's: say so rather than leave it "running"
        bound.exception("strategy check crashed")
        result = CheckResult(
            False,
            error=f"The check itself failed ({type(exc).__name__}: {exc}). This says nothing about the strategy: "
            "run the check again, or tell an administrator if it keeps failing.",
        )
    stored = asyncio.run(_finish(settings, strategy_id, sha256, result))
    status = (CheckStatus.passed if result.passed else CheckStatus.failed).value
    bound.info(
        "strategy check finished",
        check_status=status,
        stored=stored,
        reason=result.reason,
        seconds=result.summary["seconds"] if result.summary else None,
    )
    return {"strategy_id": str(strategy_id), "check_status": status, "stored": stored}


def register_check_task(app: Celery, settings: ManagementSettings) -> None:
    """Add ``freqfleet.strategies.check`` to ``app``."""

    @app.task(
        name=CHECK_TASK,
        bind=True,
        shared=False,  # each app its own task, closed over its own settings
        acks_late=True,
        # The database out of reach for a moment: check again later (the check is idempotent). Connection
        # errors come as SQLAlchemy's OperationalError/InterfaceError or as OSError (refused, timed out).
        autoretry_for=(OperationalError, InterfaceError, OSError),
        max_retries=3,
        retry_backoff=10,
        time_limit=int(CHECK_TIMEOUT) + 120,
    )
    def check(self: Task[Any, Any], strategy_id: str, sha256: str) -> dict[str, Any]:
        """Backtest a strategy on the exchange simulator and store the outcome on it."""

        def progress(step: str) -> None:
            try:
                self.update_state(state="PROGRESS", meta={"strategy_id": strategy_id, "step": step})
            except Exception as exc:  # progress is for watchers; a Redis hiccup must not fail the check
                log.warning("could not report check progress", step=step, error=f"{type(exc).__name__}: {exc}")

        return check_strategy(settings, uuid.UUID(strategy_id), sha256, progress)


def send_check(app: Celery, strategy_id: uuid.UUID, sha256: str) -> str:
    """Publish a check task (blocking: call it off the event loop); its task id."""
    result = app.send_task(
        CHECK_TASK,
        args=[str(strategy_id), sha256],
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    )
    return str(result.id)


class CheckQueue:
    """Sends check tasks from the event loop without blocking it.

    Publishing to the broker is blocking I/O in Celery, so it happens on one thread of our own (one, so
    Celery's producer is never used from two threads at once), and a caller waits at most
    ``SEND_TIMEOUT`` seconds for it.
    """

    def __init__(self, celery: Celery, timeout: float = SEND_TIMEOUT) -> None:
        self.celery = celery
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-send")

    async def send(self, strategy_id: uuid.UUID, sha256: str) -> str | None:
        """The task id, or None when the broker did not take the task (logged)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, partial(send_check, self.celery, strategy_id, sha256)),
                self.timeout,
            )
        except Exception as exc:
            log.warning(
                "could not queue a strategy check",
                strategy_id=str(strategy_id),
                error=f"{type(exc).__name__}: {exc}",
            )
            return None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.celery.close()
