"""The deeper strategy check: a real ``freqtrade`` backtest on ``freqfleet simulator`` data, run directly and
through a real ``freqfleet worker`` behind the real management server.

Nothing here is mocked: the freqtrade commands, the simulator, the Celery worker, PostgreSQL and Valkey are
the real ones. A broker that does not answer is a real closed port.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy import text

from management_server.config import ManagementSettings
from management_server.strategies.check import NO_TRADES_NOTE, run_backtest_check
from management_server.strategies.tasks import CHECK_TASK, PENDING_REVIEW_NOTE, CheckQueue, check_strategy
from management_server.strategies.validation import validate_strategy
from management_server.users.models import Role
from management_server.worker import PING_TASK, create_celery
from shared.sandbox.host import detect
from shared.sandbox.policy import Limits
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import free_port
from tests.hostile import assert_contained, worker_targets
from tests.management_server.conftest import Management, bearer

ALWAYS_ENTER = (Path(__file__).parents[2] / "exchange_simulator" / "strategies" / "AlwaysEnter.py").read_text()
PAIRS = ["BTC/USDT", "ETH/USDT"]
DAYS = 3


def variant(class_name: str, old: str, new: str) -> str:
    """AlwaysEnter renamed, with one piece of it changed."""
    assert old in ALWAYS_ENTER
    return ALWAYS_ENTER.replace("class AlwaysEnter(", f"class {class_name}(").replace(old, new)


RAISES = variant(
    "RaisesInIndicators",
    "    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:\n        return dataframe",
    "    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:\n"
    "        raise ValueError('no indicators today 42')",
)
NEVER_ENTERS = variant("NeverEnters", 'dataframe["enter_long"] = 1', 'dataframe["enter_long"] = 0')
IMPORTS_MISSING = variant(
    "ImportsMissing", "from pandas import DataFrame", "import freqfleet_no_such_module\nfrom pandas import DataFrame"
)


def klines_served(sim: SimulatorProcess) -> int:
    count: int = httpx.get(f"{sim.url}/_sim/stats").json()["endpoints"].get("/api/v3/klines", {}).get("count", 0)
    return count


# -- the check function ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_strategy_that_trades_passes_with_a_summary(simulator: SimulatorProcess, tmp_path: Path) -> None:
    steps: list[str] = []
    pages_before = klines_served(simulator)
    started = time.time()
    result = run_backtest_check(
        ALWAYS_ENTER,
        "AlwaysEnter",
        simulator_url=simulator.url,
        workdir=tmp_path,
        pairs=PAIRS,
        days=DAYS,
        progress=steps.append,
    )
    assert result.passed, result.error
    assert result.error is None
    summary = result.summary
    assert summary is not None
    print(f"a passing check took {summary['seconds']} s")
    assert summary["trades"] > 0
    assert summary["wins"] + summary["losses"] + summary["draws"] == summary["trades"]
    assert summary["pairs"] == PAIRS
    assert summary["timeframe"] == "5m"
    assert summary["stake_currency"] == "USDT"
    assert summary["freqtrade_version"] == metadata.version("freqtrade")
    assert isinstance(summary["profit_total_abs"], float)
    assert summary["profit_total"] == pytest.approx(summary["profit_total_abs"] / summary["starting_balance"])
    assert 0 <= summary["max_drawdown"] < 1
    assert "note" not in summary
    assert 0 < summary["seconds"] < 300
    # The candles came from the simulator, from midnight DAYS days ago up to about now.
    assert klines_served(simulator) > pages_before
    start = datetime.fromisoformat(summary["timerange"]["start"]).timestamp()
    end = datetime.fromisoformat(summary["timerange"]["end"]).timestamp()
    assert started - (DAYS + 1) * 86_400 <= start <= started - DAYS * 86_400
    assert started - 3600 <= end <= started
    assert steps == ["download", "backtest", "read"]
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone
    json.dumps(summary, allow_nan=False)  # storable as JSONB


@pytest.mark.slow
def test_a_strategy_without_trades_passes_and_says_so(simulator: SimulatorProcess, tmp_path: Path) -> None:
    result = run_backtest_check(
        NEVER_ENTERS, "NeverEnters", simulator_url=simulator.url, workdir=tmp_path, pairs=PAIRS[:1], days=DAYS
    )
    assert result.passed, result.error
    assert result.summary is not None
    assert result.summary["trades"] == 0
    assert result.summary["note"] == NO_TRADES_NOTE


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "class_name", "reason", "in_log"),
    [
        (
            RAISES,
            "RaisesInIndicators",
            "The backtest did not finish: the strategy raised ValueError: no indicators today 42 in "
            "populate_indicators (line 23)",
            'File "strategies/RaisesInIndicators.py", line 23, in populate_indicators',
        ),
        (
            IMPORTS_MISSING,
            "ImportsMissing",
            "The backtest did not finish: the strategy could not be imported: "
            "No module named 'freqfleet_no_such_module'",
            "Impossible to load Strategy 'ImportsMissing'",
        ),
    ],
    ids=["raises-in-populate_indicators", "import-error"],
)
def test_a_broken_strategy_fails_with_the_reason_and_the_log(
    simulator: SimulatorProcess, tmp_path: Path, source: str, class_name: str, reason: str, in_log: str
) -> None:
    result = run_backtest_check(
        source, class_name, simulator_url=simulator.url, workdir=tmp_path, pairs=PAIRS[:1], days=DAYS
    )
    assert not result.passed
    assert result.summary is None
    assert result.error is not None
    assert result.reason == reason
    log = result.error.split("The last lines of freqtrade backtesting's log:\n", 1)[1].splitlines()
    assert 0 < len(log) <= 20
    assert in_log in result.error
    assert str(tmp_path) not in result.error  # no server paths for the strategy's owner
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_check_that_runs_out_of_time_is_stopped(simulator: SimulatorProcess, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_backtest_check(
        ALWAYS_ENTER, "AlwaysEnter", simulator_url=simulator.url, workdir=tmp_path, pairs=PAIRS, timeout=1.5
    )
    assert time.monotonic() - started < 15
    assert not result.passed
    assert result.reason == "freqtrade download-data did not finish within the check's 1.5 s and was stopped."
    assert list(tmp_path.iterdir()) == []
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_an_unreachable_simulator_is_not_blamed_on_the_strategy(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run_backtest_check(ALWAYS_ENTER, "AlwaysEnter", simulator_url=nowhere, workdir=tmp_path)
    assert not result.passed
    assert result.reason is not None
    assert result.reason.startswith(f"The check could not run: the exchange simulator at {nowhere} did not answer")
    assert "says nothing about the strategy" in result.reason


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"class_name": "../evil"}, "not a class name"),
        ({"class_name": "Evil\n"}, "not a class name"),
        ({"pairs": ["BTC/USDT", "ETH/BTC"]}, "one (the stake) currency"),
        ({"pairs": "BTC/USDT"}, "as a list"),
        ({"timeframe": "5 minutes"}, "not a timeframe"),
        ({"days": 0}, "days must be"),
    ],
)
def test_arguments_are_checked_before_anything_runs(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"class_name": "AlwaysEnter", "pairs": PAIRS, "timeframe": "5m", "days": 1}
    arguments |= changes
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_backtest_check(ALWAYS_ENTER, simulator_url="http://127.0.0.1:1", workdir=tmp_path, **arguments)


# -- queueing through the API, without a worker ---------------------------------------------------------


async def sign_in(management: Management, email: str, role: Role = Role.user) -> dict[str, str]:
    await management.create_user(email, role=role)
    return bearer((await management.login(email))["access_token"])


async def upload(management: Management, headers: dict[str, str], name: str, source: str = ALWAYS_ENTER) -> Any:
    response = await management.client.post(
        "/api/v1/strategies", json={"name": name, "source": source}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def queued_tasks(redis_url: str) -> list[dict[str, Any]]:
    """The task messages waiting in Celery's default queue (a Redis list)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.lrange("celery", 0, -1)
    finally:
        await client.aclose()
    return [json.loads(item)["headers"] for item in raw]


async def test_only_an_approved_strategy_is_checked_and_one_check_at_a_time(
    management: Management, redis_url: str
) -> None:
    alice = await sign_in(management, "alice@example.com")
    bob = await sign_in(management, "bob@example.com")
    admin = await sign_in(management, "root@example.com", Role.admin)
    strategy = await upload(management, alice, "always")
    # Under review: its code is not run, not even in a backtest.
    assert strategy["check_status"] == "not_run"
    assert await queued_tasks(redis_url) == []
    path = f"/api/v1/strategies/{strategy['id']}/check"
    assert (await management.client.post(path, headers=bob)).status_code == 404
    refused = await management.client.post(path, headers=alice)
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("An admin must approve the strategy before it is checked")

    # An admin may check it to decide; approving queues one too.
    checked = await management.client.post(path, headers=admin)
    assert checked.status_code == 202, checked.text
    tasks = await queued_tasks(redis_url)
    assert [t["task"] for t in tasks] == [CHECK_TASK]
    assert strategy["id"] in tasks[0]["argsrepr"]
    assert strategy["sha256"] in tasks[0]["argsrepr"]
    busy = await management.client.post(path, headers=admin)
    assert busy.status_code == 409
    assert busy.json()["detail"] == "A check of this strategy is queued already: wait for its result."

    # A check queued over an hour ago was lost (no worker took it): it may be queued again.
    async with management.app.state.sessionmaker.begin() as session:
        await session.execute(
            text("UPDATE strategies SET updated_at = now() - interval '2 hours' WHERE id = :id"),
            {"id": uuid.UUID(strategy["id"])},
        )
    again = await management.client.post(path, headers=admin)
    assert again.status_code == 202, again.text
    assert again.json()["check_status"] == "queued"
    assert len(await queued_tasks(redis_url)) == 2

    mine = await upload(management, admin, "admins")  # an admin's upload is approved, so checked at once
    assert mine["check_status"] == "queued"
    assert len(await queued_tasks(redis_url)) == 3

    audit = await management.audit("strategy.check")
    assert [(e.outcome, e.actor) for e in audit] == [
        ("failure", "alice@example.com"),
        ("success", "root@example.com"),
        ("failure", "root@example.com"),
        ("success", "root@example.com"),
    ]
    assert audit[1].details is not None
    assert audit[1].details["sha256"] == strategy["sha256"]


async def test_a_broker_that_does_not_answer_leaves_the_upload_standing(management: Management, redis_url: str) -> None:
    alice = await sign_in(management, "root@example.com", Role.admin)  # approved at upload, so checked
    original = management.app.state.check_queue
    dead = management.settings.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0")})
    management.app.state.check_queue = CheckQueue(create_celery(dead, results=False))
    try:
        started = time.monotonic()
        strategy = await upload(management, alice, "always")
        assert time.monotonic() - started < 4
        assert strategy["check_status"] == "not_run"
        response = await management.client.post(f"/api/v1/strategies/{strategy['id']}/check", headers=alice)
        assert response.status_code == 503
        assert "could not be queued" in response.json()["detail"]
    finally:
        management.app.state.check_queue.close()
        management.app.state.check_queue = original
    shown = await management.client.get(f"/api/v1/strategies/{strategy['id']}", headers=alice)
    assert shown.json()["check_status"] == "not_run"
    assert await queued_tasks(redis_url) == []
    assert [(e.outcome, e.reason) for e in await management.audit("strategy.check")] == [
        ("failure", "The check could not be queued: the task broker did not answer. Try again in a moment.")
    ]


async def test_the_task_skips_a_strategy_deleted_or_changed_since_it_was_queued(management: Management) -> None:
    alice = await sign_in(management, "root@example.com", Role.admin)
    strategy = await upload(management, alice, "always")
    gone = await asyncio.to_thread(check_strategy, management.settings, uuid.uuid4(), strategy["sha256"])
    assert gone["skipped"] == "the strategy was deleted"
    changed = await asyncio.to_thread(check_strategy, management.settings, uuid.UUID(strategy["id"]), "0" * 64)
    assert changed["skipped"] == "the strategy's source changed"
    shown = await management.client.get(f"/api/v1/strategies/{strategy['id']}", headers=alice)
    assert (shown.json()["check_status"], shown.json()["check_result"]) == ("queued", None)


# -- end to end: a real worker --------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture
def worker(management_settings: ManagementSettings, simulator: SimulatorProcess, tmp_path: Path) -> Iterator[Worker]:
    """``freqfleet worker`` on the test's database and Redis, checking against the module's simulator."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env |= {
        "FREQFLEET_ENV": "test",
        "FREQFLEET_DATABASE_URL": management_settings.database_url.get_secret_value(),
        "FREQFLEET_REDIS_URL": management_settings.redis_url.get_secret_value(),
        "FREQFLEET_SIMULATOR_URL": simulator.url,
        "FREQFLEET_DATA_DIR": str(tmp_path / "worker"),
        "FREQFLEET_CELERY_CONCURRENCY": "2",
        "FREQFLEET_LOG_FORMAT": "console",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "freqfleet", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Worker(proc, log)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def ping_worker(settings: ManagementSettings) -> None:
    celery = create_celery(settings)
    try:
        celery.send_task(PING_TASK).get(timeout=60)
    finally:
        celery.close()


async def watch_checks(
    management: Management,
    headers: dict[str, str],
    ids: list[str],
    worker: Worker,
    timeout: float = 120,
    tick: Callable[[], object] | None = None,
) -> dict[str, list[str]]:
    """Each strategy's check statuses, in the order seen, until every check ended (``tick`` runs each round,
    in a thread)."""
    seen: dict[str, list[str]] = {i: [] for i in ids}
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            await asyncio.to_thread(tick)
        listed = await management.client.get("/api/v1/strategies", headers=headers)
        assert listed.status_code == 200, listed.text
        for strategy in listed.json():
            history = seen.get(strategy["id"])
            if history is not None and (not history or history[-1] != strategy["check_status"]):
                history.append(strategy["check_status"])
        if all(h and h[-1] in ("passed", "failed") for h in seen.values()):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"checks still not done after {timeout}s: {seen}\n--- worker ---\n{worker.output()}")
        await asyncio.sleep(0.3)  # the per-IP rate limit allows 300 requests a minute


@pytest.mark.slow
async def test_a_worker_checks_uploads_and_stores_the_outcome_on_the_strategy(
    management: Management, worker: Worker
) -> None:
    alice = await sign_in(management, "alice@example.com")
    bob = await sign_in(management, "bob@example.com")
    started = time.monotonic()
    await asyncio.to_thread(ping_worker, management.settings)
    worker_ready = time.monotonic() - started

    started = time.monotonic()
    good = await upload(management, alice, "always")
    bad = await upload(management, alice, "raises", RAISES)
    admin = await sign_in(management, "root@example.com", Role.admin)
    for strategy in (good, bad):  # under review: an admin checks them to decide
        asked = await management.client.post(f"/api/v1/strategies/{strategy['id']}/check", headers=admin)
        assert asked.json()["check_status"] == "queued"
    seen = await watch_checks(management, alice, [good["id"], bad["id"]], worker)
    both_checked = time.monotonic() - started
    assert seen[good["id"]][-2:] == ["running", "passed"], seen
    assert seen[bad["id"]][-2:] == ["running", "failed"], seen

    shown = (await management.client.get(f"/api/v1/strategies/{good['id']}", headers=alice)).json()
    assert shown["status"] == "pending_review"  # a check never approves
    result = shown["check_result"]
    assert result["passed"] is True
    assert result["sha256"] == good["sha256"]
    assert result["summary"]["trades"] > 0
    assert result["summary"]["pairs"] == PAIRS
    assert result["summary"]["freqtrade_version"] == metadata.version("freqtrade")

    failed = (await management.client.get(f"/api/v1/strategies/{bad['id']}", headers=alice)).json()
    assert failed["status"] == "pending_review"  # left for an admin to decide
    assert failed["check_result"]["passed"] is False
    assert failed["check_result"]["reason"].endswith(
        "ValueError: no indicators today 42 in populate_indicators (line 23)"
    )
    assert "raise ValueError('no indicators today 42')" in failed["check_result"]["error"]
    assert failed["check_result"]["review"] == PENDING_REVIEW_NOTE

    # Checking again recomputes: queued at once, a second request meanwhile is refused, then a new result.
    path = f"/api/v1/strategies/{good['id']}/check"
    assert (await management.client.post(path, headers=bob)).status_code == 404
    started = time.monotonic()
    again = await management.client.post(path, headers=admin)
    assert again.status_code == 202, again.text
    assert again.json()["check_status"] == "queued"
    assert again.json()["check_result"] == result  # the last outcome stays until the new one lands
    assert (await management.client.post(path, headers=admin)).status_code == 409
    audit = await management.audit("strategy.check")
    assert audit[2].details is not None
    task_id = audit[2].details["task_id"]
    celery = create_celery(management.settings)  # with the result backend, to read the task's state
    states: list[tuple[str, Any]] = []
    try:
        seen = await watch_checks(
            management,
            alice,
            [good["id"]],
            worker,
            tick=lambda: states.append((celery.AsyncResult(task_id).state, celery.AsyncResult(task_id).info)),
        )
        final = await asyncio.to_thread(lambda: celery.AsyncResult(task_id).get(timeout=30))
    finally:
        celery.close()
    rechecked = time.monotonic() - started
    assert seen[good["id"]][-1] == "passed", seen
    # The task reported its progress through Celery's task state, then its outcome.
    progress = [info["step"] for state, info in states if state == "PROGRESS"]
    assert progress, states
    assert set(progress) <= {"download", "backtest", "read"}
    assert final == {"strategy_id": good["id"], "check_status": "passed", "stored": True}
    latest = (await management.client.get(f"/api/v1/strategies/{good['id']}", headers=alice)).json()["check_result"]
    assert latest["checked_at"] > result["checked_at"]
    assert latest["summary"]["trades"] > 0
    assert [(e.outcome, e.actor) for e in await management.audit("strategy.check")] == [
        ("success", "root@example.com"),
        ("success", "root@example.com"),
        ("success", "root@example.com"),
        ("failure", "root@example.com"),
    ]
    print(
        f"worker ready in {worker_ready:.1f} s; two checks in parallel {both_checked:.1f} s; "
        f"a re-check {rechecked:.1f} s; check seconds {latest['summary']['seconds']}"
    )


def test_a_hostile_strategy_in_the_check_reaches_nothing(simulator: SimulatorProcess, tmp_path: Path) -> None:
    """What the worker runs: the check under the host's sandbox, as the check's own uid when root."""
    sandbox = detect(610_000, Limits())
    assert sandbox.mode != "none"
    with worker_targets(tmp_path, ALWAYS_ENTER) as source:
        assert validate_strategy(source).ok
        result = run_backtest_check(
            source,
            "AlwaysEnter",
            simulator_url=simulator.url,
            workdir=tmp_path / "checks",
            pairs=PAIRS[:1],
            days=1,
            sandbox=sandbox,
        )
    assert not result.passed
    assert_contained(result.error or "", tmp_path)
