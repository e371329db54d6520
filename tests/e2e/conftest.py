"""The whole system as real processes, started once for all the end-to-end tests.

``freqfleet simulator``, ``freqfleet management``, ``freqfleet gateway`` and ``freqfleet worker``
run as subprocesses on free ports, against a fresh migrated database on the session's embedded
PostgreSQL and the session's Valkey (flushed first), as ``freqfleet up`` would
start them. The first admin comes from ``freqfleet create-admin``. Tests talk to them only over
HTTP, as a user with curl would; bots are real Freqtrade processes trading on the simulator.

Differences from ``freqfleet up``'s defaults, to keep the tests short: the gateway reads its bots'
status and beats every second, the management server reconciles every second (a command has 3 s to show) and the
bots loop every second; the request rate limits are off (the tests poll; the limits have their own tests); an emergency
stop waits up to 30 s for its reports.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey, restricted_user
from tests.conftest import fresh_database
from tests.enrollment import enroll_with_the_cli
from tests.exchange_simulator.conftest import SimulatorProcess, start_simulator_process, stop_simulator_process
from tests.helpers import async_wait_for, free_port, wait_for
from trading_gateway.bots import BOTS_DIR
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.redis_acl import acl_rules, acl_user

ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@e2e.example.com"
ADMIN_PASSWORD = "an admin password for e2e"
PASSWORD = "a user password for e2e"
START_TIMEOUT = 90.0


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Service:
    """One ``freqfleet <name>`` process in a session of its own; output to ``log``."""

    name: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "freqfleet", self.name],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM its process group, SIGKILL what is left after ``timeout``; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(10)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent (Celery's pool)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def last_run(self) -> str:
        """The output since the latest start."""
        return self.output().rsplit(f"===== start {self.starts} =====", 1)[-1]


@dataclass
class Stack:
    management: str  # base URL
    gateway: str
    gateway_id: str
    simulator: SimulatorProcess
    services: dict[str, Service]
    data_dir: Path
    logs: Path
    redis_url: str
    database_url: str
    admin_token: str = ""

    @property
    def api(self) -> str:
        return f"{self.management}/api/v1"

    @property
    def bots_root(self) -> Path:
        return self.data_dir / "gateway" / self.gateway_id / BOTS_DIR

    def wait_ready(self, name: str) -> None:
        """Wait until the service answers ``/health/ready``; fail at once if its process ends."""
        service = self.services[name]
        url = {"management": self.management, "gateway": self.gateway}[name]
        try:
            wait_for(lambda: not service.running or _ready(url), timeout=START_TIMEOUT, what=f"{name} to be ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{service.last_run()[-4000:]}") from None
        if not service.running:
            raise AssertionError(f"freqfleet {name} exited:\n{service.last_run()[-4000:]}")

    def diagnostics(self) -> str:
        """The end of every service's output, for a failing test's report."""
        parts = [f"--- {name} ---\n{s.output()[-3000:]}" for name, s in self.services.items()]
        return "\n".join([*parts, f"--- simulator ---\n{self.simulator.output()[-1000:]}"])


def _env(data_dir: Path, database_url: str, redis_url: str, simulator: SimulatorProcess) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    ports = random.randrange(20_000, 60_000, 100)
    mport, gport = free_port(), free_port()
    env |= {
        "FREQFLEET_DATA_DIR": str(data_dir),
        "FREQFLEET_DATABASE_URL": database_url,
        "FREQFLEET_REDIS_URL": redis_url,
        "FREQFLEET_MANAGEMENT_PORT": str(mport),
        "FREQFLEET_MANAGEMENT_URL": f"http://127.0.0.1:{mport}",
        "FREQFLEET_GATEWAY_PORT": str(gport),
        "FREQFLEET_GATEWAY_ID": f"gw-e2e-{uuid.uuid4().hex[:8]}",
        "FREQFLEET_SIMULATOR_URL": simulator.url,
        "FREQFLEET_LOG_FORMAT": "console",
        "FREQFLEET_CELERY_CONCURRENCY": "1",
        "FREQFLEET_RATE_LIMIT_ENABLED": "false",
        "FREQFLEET_EMERGENCY_WAIT_SECONDS": "30",
        "FREQFLEET_HEARTBEAT_INTERVAL": "1",
        "FREQFLEET_RECONCILE_INTERVAL": "1",
        "FREQFLEET_FAILOVER_INTERVAL": "1",
        "FREQFLEET_RECONCILE_GRACE": "3",
        "FREQFLEET_STATUS_INTERVAL": "1",
        "FREQFLEET_BOT_PROCESS_THROTTLE_SECS": "1",
        "FREQFLEET_BOT_START_TIMEOUT": "60",
        "FREQFLEET_BOT_STOP_GRACE": "10",
        "FREQFLEET_BOT_PORT_RANGE_START": str(ports),
        "FREQFLEET_BOT_PORT_RANGE_END": str(ports + 29),
        "FREQFLEET_STOP_BOTS_ON_SHUTDOWN": "true",  # as under `freqfleet up`
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest_asyncio.fixture(loop_scope="session", scope="package")
async def e2e_database(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh migrated database for the stack."""
    async with fresh_database(postgres) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session", scope="package")
async def e2e_redis(valkey: EmbeddedValkey) -> AsyncIterator[str]:
    """The session's Valkey, flushed for the stack (these tests don't use the per-test flush)."""
    client = aioredis.Redis.from_url(valkey.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return valkey.url


@pytest.fixture(scope="package")
def stack(
    postgres: EmbeddedPostgres, e2e_database: str, e2e_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    simulator = start_simulator_process(logs / "simulator.log")
    data_dir = tmp_path_factory.mktemp("e2e-data")
    env = _env(data_dir, e2e_database, e2e_redis, simulator)
    # As under `freqfleet up`: the gateway's Valkey user reaches only its own keys (trading_gateway/redis_acl.py).
    gateway_id = env["FREQFLEET_GATEWAY_ID"]
    gateway_env = env | {"FREQFLEET_REDIS_URL": restricted_user(e2e_redis, acl_user(gateway_id), acl_rules(gateway_id))}
    # The management server in two worker processes, as `up` runs it on a host with cores to spare: every e2e test
    # then shows its background work (events consumer, outbox relay, reconciler) correct with several processes.
    # Each bot's trades in a PostgreSQL database of its own, as under `freqfleet up` (management_server/botdb): the
    # provisioning role goes to the management server alone.
    bot_db = {"FREQFLEET_BOT_DB": "postgres", "FREQFLEET_BOT_DB_ADMIN_URL": postgres.provisioner_url()}
    services = {
        "management": Service(
            "management", env | bot_db | {"FREQFLEET_MANAGEMENT_WORKERS": "2"}, logs / "management.log"
        )
    }
    services["worker"] = Service("worker", env, logs / "worker.log")
    services["gateway"] = Service("gateway", gateway_env, logs / "gateway.log")
    s = Stack(
        management=env["FREQFLEET_MANAGEMENT_URL"],
        gateway=f"http://127.0.0.1:{env['FREQFLEET_GATEWAY_PORT']}",
        gateway_id=env["FREQFLEET_GATEWAY_ID"],
        simulator=simulator,
        services=services,
        data_dir=data_dir,
        logs=logs,
        redis_url=e2e_redis,
        database_url=e2e_database,
    )
    try:
        admin = subprocess.run(
            [sys.executable, "-m", "freqfleet", "create-admin", "--email", ADMIN_EMAIL],
            env=env | {"FREQFLEET_ADMIN_PASSWORD": ADMIN_PASSWORD},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert admin.returncode == 0, admin.stdout + admin.stderr
        enroll_with_the_cli(env, ROOT)
        services["management"].start()
        s.wait_ready("management")  # the gateway fetches the signing keys from it
        services["gateway"].start()
        services["worker"].start()
        s.wait_ready("gateway")
        s.admin_token = login(s, ADMIN_EMAIL, ADMIN_PASSWORD)
        yield s
    finally:
        # The gateway first: it stops its bots while the bus is still there.
        for name in ("gateway", "worker", "management"):
            services[name].stop()
        for orphan in find_orphans(s.bots_root):  # by command line: only this stack's bots
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan.pid, signal.SIGKILL)
        stop_simulator_process(simulator)


def login(stack: Stack, email: str, password: str) -> str:
    response = httpx.post(f"{stack.api}/auth/token", data={"username": email, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture(loop_scope="session")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the management API (base URL ``/api/v1``)."""
    async with httpx.AsyncClient(base_url=stack.api, timeout=60) as http:
        yield http


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failing test's report ends with what each service wrote last."""
    report: pytest.TestReport = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(stack, Stack):
        report.sections.append(("freqfleet services", stack.diagnostics()))
    return report


# ------------------------------------------------------------------ what the tests do through the API


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    """Register over the API, log in; the bearer header of the new user."""
    created = await client.post("/auth/register", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    token = await client.post("/auth/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    return bearer(token.json()["access_token"])


async def get_bot(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str) -> dict[str, Any]:
    response = await client.get(f"/bots/{bot_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_bot(
    client: httpx.AsyncClient, headers: dict[str, str], bot_id: str, actual_state: str, timeout: float = 60
) -> dict[str, Any]:
    """The bot once its ``actual_state`` reads ``actual_state``."""

    async def reached() -> dict[str, Any] | None:
        bot = await get_bot(client, headers, bot_id)
        return bot if bot["actual_state"] == actual_state else None

    try:
        return await async_wait_for(reached, timeout=timeout, interval=0.25, what=f"bot {bot_id} {actual_state}")
    except AssertionError as exc:
        last = await get_bot(client, headers, bot_id)
        raise AssertionError(f"{exc}; the bot reads {last}") from None


async def wait_status(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    bot_id: str,
    state: str,
    *,
    open_trades: bool | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """The bot's live status once Freqtrade's ``state`` is ``state`` (and it has open trades, or none)."""

    async def reached() -> dict[str, Any] | None:
        response = await client.get(f"/bots/{bot_id}/status", headers=headers)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["state"] != state:
            return None
        if open_trades is not None and bool(status["open_trades"]) != open_trades:
            return None
        return status

    return await async_wait_for(reached, timeout=timeout, interval=0.25, what=f"bot {bot_id} status {state}")


async def gateway_bots(stack: Stack) -> dict[str, dict[str, Any]]:
    """What the gateway says it runs (``GET /api/v1/bots`` with the admin's token), by bot id."""
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as http:
        response = await http.get("/api/v1/bots", headers=bearer(stack.admin_token))
    assert response.status_code == 200, response.text
    return {b["bot_id"]: b for b in response.json()["bots"]}


# ------------------------------------------------------------------ the dashboard in a real browser

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
# Chromium's own traffic (updates, sync, field trials) would only meet this machine's closed network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT = 60_000  # ms: a bot's start, its first trades


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip("no browser: the dashboard tests drive Debian's Chromium (apt-get install chromium; CI does)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        await launched.close()


class Page:
    """A browser page on the dashboard that fails the test on any script error or dialog it didn't expect."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.accept_confirms = True
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._dialog)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm" and self.accept_confirms:
            await dialog.accept()
        else:
            await dialog.dismiss()

    async def log_in(self, email: str, password: str = PASSWORD) -> None:
        await self.page.goto(self.base + "/")
        await self.page.fill("#login input[name=email]", email)
        await self.page.fill("#login input[name=password]", password)
        await self.page.click("#login button[type=submit]")
        await self.page.wait_for_selector("#fleet", timeout=WAIT)

    async def shot(self, name: str, folder: Path) -> None:
        await self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any, stack: Stack) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    wrapped = Page(await context.new_page(), stack.management)
    yield wrapped
    await context.close()
    assert wrapped.errors == [], wrapped.errors


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FREQFLEET_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
