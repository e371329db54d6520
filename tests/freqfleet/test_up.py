"""``freqfleet up`` as a real subprocess: embedded servers, children, restart, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
import redis
from argon2 import PasswordHasher
from pydantic import SecretStr

from freqfleet.embedded import APP_ROLE, server_secrets
from management_server.config import ManagementSettings
from management_server.worker import PING_TASK, create_celery
from shared.settings import Environment
from tests.freqfleet.test_cli import freqfleet
from tests.helpers import free_port, wait_for
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET

pytestmark = pytest.mark.slow

ADMIN_EMAIL = "ops@example.com"


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path
    management: str
    gateway: str
    simulator: str
    valkey_port: int
    postgres_port: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def redis_url(self) -> str:
        """The embedded Valkey, with the password ``up`` generated into the data dir."""
        return f"redis://:{server_secrets(self.data_dir)['valkey']}@127.0.0.1:{self.valkey_port}/0"

    def postmaster(self) -> tuple[int, Path]:
        lines = (self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), Path(lines[4])

    def all_pids(self) -> set[int]:
        """``up``, everything under it, and the PostgreSQL server with its backends."""
        root = psutil.Process(self.proc.pid)
        pids = {self.proc.pid} | {p.pid for p in root.children(recursive=True)}
        pg_pid, _ = self.postmaster()
        pids |= {pg_pid} | {p.pid for p in psutil.Process(pg_pid).children(recursive=True)}
        return pids

    def child(self, name: str) -> psutil.Process:
        for proc in psutil.Process(self.proc.pid).children():
            if proc.cmdline()[-1:] == [name]:
                return proc
        raise LookupError(name)

    def query(self, sql: str) -> list[asyncpg.Record]:
        _, socket_dir = self.postmaster()
        port = int((self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[3])

        async def run() -> list[asyncpg.Record]:
            password = server_secrets(self.data_dir)["postgres_app"]
            conn = await asyncpg.connect(
                host=str(socket_dir), port=port, user=APP_ROLE, password=password, database="freqfleet"
            )
            try:
                return list(await conn.fetch(sql))
            finally:
                await conn.close()

        return asyncio.run(run())

    def users(self) -> list[asyncpg.Record]:
        return self.query("SELECT id, email, role, password_hash, created_at FROM users")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_up(data_dir: Path, tmp_path: Path, admin_password: str | None = None, **extra: str) -> Up:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    mport, gport, sport, vport, pport = free_port(), free_port(), free_port(), free_port(), free_port()
    env.update(
        {
            "FREQFLEET_DATA_DIR": str(data_dir),
            "FREQFLEET_MANAGEMENT_PORT": str(mport),
            "FREQFLEET_GATEWAY_PORT": str(gport),
            "FREQFLEET_SIMULATOR_PORT": str(sport),
            "FREQFLEET_VALKEY_PORT": str(vport),
            "FREQFLEET_POSTGRES_PORT": str(pport),
            "FREQFLEET_WORKER_METRICS_PORT": str(free_port()),
            "FREQFLEET_ADMIN_EMAIL": ADMIN_EMAIL,
            "FREQFLEET_CELERY_CONCURRENCY": "1",
        }
    )
    if admin_password is not None:
        env["FREQFLEET_ADMIN_PASSWORD"] = admin_password
    env.update(extra)
    log = tmp_path / f"up-{len(list(tmp_path.glob('up-*.log')))}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # a process group of its own, as a terminal gives `make run`
            [sys.executable, "-m", "freqfleet", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    up = Up(
        proc,
        data_dir,
        log,
        f"http://127.0.0.1:{mport}",
        f"http://127.0.0.1:{gport}",
        f"http://127.0.0.1:{sport}",
        vport,
        pport,
    )
    try:
        wait_for(
            lambda: proc.poll() is None and _ready(up.management) and _ready(up.gateway) and _ready(up.simulator),
            timeout=120,
            what="the services ready",
        )
        wait_for(lambda: "Freqfleet is up." in up.output(), timeout=30, what="the banner")
    except AssertionError:
        stop_up(up)
        raise AssertionError(f"freqfleet up did not come up:\n{up.output()[-5000:]}") from None
    return up


def stop_up(up: Up, timeout: float = 15, sig: signal.Signals = signal.SIGTERM) -> set[int]:
    """Send ``sig`` to ``up``'s process group (SIGINT: what Ctrl-C on its terminal does); returns the pids that
    were still alive ``timeout`` seconds later."""
    try:
        pids = up.all_pids()
    except (psutil.Error, OSError):
        pids = {up.proc.pid}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(up.proc.pid, sig)
    try:
        up.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        up.proc.kill()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not any(_alive(p) for p in pids), timeout=timeout, what="every process to exit")
    left = {p for p in pids if _alive(p)}
    for pid in left:
        psutil.Process(pid).kill()
    return left


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    return path


def test_up_serves_bootstraps_restarts_and_stops_cleanly(data_dir: Path, tmp_path: Path) -> None:
    password = "a-strong-admin-password"
    up = start_up(data_dir, tmp_path, admin_password=password)
    try:
        # The first admin is in the database, with an argon2id hash of the given password.
        users = up.users()
        assert [(u["email"], u["role"]) for u in users] == [(ADMIN_EMAIL, "admin")]
        assert users[0]["password_hash"].startswith("$argon2id$")
        assert PasswordHasher().verify(users[0]["password_hash"], password)
        assert password not in up.output()

        # The exchange simulator answers Binance's API on its own port, and the banner names it.
        assert httpx.get(f"{up.simulator}/api/v3/ping", timeout=5).json() == {}
        klines = httpx.get(
            f"{up.simulator}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "5m", "limit": 3}, timeout=5
        ).json()
        assert len(klines) == 3
        assert f"exchange simulator {up.simulator}" in up.output()

        # The gateway's heartbeats reach the management server's database over the bus.
        gateways = wait_for(
            lambda: up.query("SELECT gateway_id, capacity FROM gateways"), timeout=30, what="a heartbeat"
        )
        assert len(gateways) == 1

        # The Celery worker takes tasks off the embedded Valkey.
        celery = create_celery(ManagementSettings(env=Environment.test, redis_url=SecretStr(up.redis_url)))
        result = celery.send_task(PING_TASK).get(timeout=60)
        assert "hostname" in result

        # The operations commands find the data dir's embedded Valkey (as `backup` finds its PostgreSQL).
        ops = {"FREQFLEET_DATA_DIR": str(data_dir), "FREQFLEET_VALKEY_PORT": str(up.valkey_port)}
        letters = freqfleet("bus", "dead-letters", env=ops)
        assert (letters.returncode, letters.stdout.strip()) == (
            0,
            "no dead letters: every message on the bus was handled",
        )

        # A bot under `up` keeps its trades in a PostgreSQL database of its own on the embedded server (its TCP port,
        # the only one its sandbox may reach besides its market data), and its gateway holds it by a lease.
        bot = _running_bot(up, password)
        gateway_id = str(gateways[0]["gateway_id"])
        config = json.loads((data_dir / "gateway" / gateway_id / "bots" / bot / "config.json").read_text())
        assert config["db_url"].startswith(f"postgresql+psycopg://ffbot_{bot.replace('-', '')}:")
        assert f"@127.0.0.1:{up.postgres_port}/" in config["db_url"]
        client = redis.Redis.from_url(up.redis_url)
        try:
            holder = client.get(f"freqfleet:holder:{bot}")
            assert holder is not None
            assert holder.decode().startswith(gateway_id + " ")
            assert client.hexists(f"freqfleet:leases:{gateway_id}", bot)
        finally:
            client.close()

        # A gateway that dies is restarted by `up` (and adopts the bot, which ran on meanwhile).
        old = up.child("gateway")
        old.kill()
        new = wait_for(
            lambda: (p := up.child("gateway")).pid != old.pid and p,
            timeout=30,
            what="a new gateway process",
        )
        wait_for(lambda: _ready(up.gateway), timeout=60, what="the restarted gateway to be ready")
        assert new.is_running()
        assert "child exited; restarting" in up.output()
    except BaseException:
        stop_up(up)
        raise

    pids = up.all_pids()
    # Ctrl-C reaches `up` alone: every server and service runs in a session of its own, and `up` stops the
    # services first and the servers after them (Valkey is told by `up`, with SIGTERM, not by the terminal).
    servers = [p for p in pids if psutil.Process(p).name().startswith(("valkey", "postgres"))]
    sessions = {os.getsid(p) for p in servers}
    left = stop_up(up, sig=signal.SIGINT)
    assert len(pids) >= 9  # up, simulator, management, gateway, worker (+pool), valkey, postgres and its workers
    assert servers
    assert up.proc.pid not in sessions  # `up` leads a session of its own (start_new_session); they are not in it
    assert left == set(), f"still running 15 s after Ctrl-C: {[psutil.Process(p).cmdline() for p in left]}"
    assert up.proc.returncode == 0
    valkey_log = (data_dir / "valkey" / "valkey.log").read_text()
    assert "Received SIGTERM" in valkey_log
    assert "Received SIGINT" not in valkey_log


def _running_bot(up: Up, password: str) -> str:
    """An admin's bot on the always-enter strategy, started and running under ``up``; its id."""
    api = f"{up.management}/api/v1"
    token = httpx.post(f"{api}/auth/token", data={"username": ADMIN_EMAIL, "password": password}, timeout=30)
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    strategy = httpx.post(
        f"{api}/strategies", json={"name": "always", "source": ALWAYS_ENTER_MARKET}, headers=headers, timeout=30
    ).json()
    body = {"name": "under-up", "strategy_id": strategy["id"], "pairs": ["BTC/USDT"], "timeframe": "1m",
            "stake_amount": "10", "max_open_trades": 1}  # fmt: skip
    created = httpx.post(f"{api}/bots", json=body, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    bot: dict[str, str] = created.json()
    assert bot["trade_db"] == "postgres"
    started = httpx.post(f"{api}/bots/{bot['id']}/start", headers=headers, timeout=30)
    assert started.status_code == 200, started.text
    wait_for(
        lambda: httpx.get(f"{api}/bots/{bot['id']}", headers=headers, timeout=10).json()["actual_state"] == "running",
        timeout=90,
        what="the bot running under up",
    )
    return bot["id"]


def up_gateways(up: Up) -> list[str]:
    return sorted(
        str(row["gateway_id"]) for row in up.query("SELECT gateway_id FROM gateways WHERE last_seen_at IS NOT NULL")
    )


def test_second_up_finds_its_data(data_dir: Path, tmp_path: Path) -> None:
    first = start_up(data_dir, tmp_path)
    try:
        banner = first.output()
        match = re.search(r"admin password\s+(\S+)", banner)
        assert match, banner[-3000:]
        generated = match.group(1)
        users = first.users()
        assert PasswordHasher().verify(users[0]["password_hash"], generated)
        redis.Redis.from_url(first.redis_url).set("freqfleet:test:marker", "kept")
    finally:
        assert stop_up(first) == set()

    # Again, with a second gateway on this machine (FREQFLEET_GATEWAYS): the first keeps its id and port, the
    # second has its own, 10 ports further, and both report to the management server; and a second management
    # server (FREQFLEET_MANAGEMENT_REPLICAS): a token one issues, the other takes.
    replica_port = free_port()
    second = start_up(
        data_dir,
        tmp_path,
        FREQFLEET_GATEWAYS="2",
        FREQFLEET_MANAGEMENT_REPLICAS="2",
        FREQFLEET_MANAGEMENT_REPLICA_PORT=str(replica_port),
    )
    try:
        assert second.users() == users  # same admin, same id and hash: nothing re-created
        assert "admin password" not in second.output()  # the generated password is shown once only
        assert redis.Redis.from_url(second.redis_url).get("freqfleet:test:marker") == b"kept"
        other = f"http://127.0.0.1:{int(second.gateway.rsplit(':', 1)[1]) + 10}"
        wait_for(lambda: _ready(other), timeout=60, what="the second gateway ready")
        gateways = wait_for(
            lambda: len(rows := up_gateways(second)) == 2 and rows, timeout=30, what="both gateways' heartbeats"
        )
        first_id = gateways[0]
        assert gateways == [first_id, f"{first_id}-2"]
        assert f"trading gateway    {other}   ({first_id}-2)" in second.output()
        replica = f"http://127.0.0.1:{replica_port}"
        assert f"management replica {replica}" in second.output()
        issued = httpx.post(
            f"{replica}/api/v1/auth/token", data={"username": ADMIN_EMAIL, "password": generated}, timeout=10
        )
        assert issued.status_code == 200, issued.text
        token = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        me = httpx.get(f"{second.management}/api/v1/users/me", headers=token, timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["email"] == ADMIN_EMAIL
    finally:
        assert stop_up(second) == set()


def test_up_refuses_a_busy_port_with_a_clear_message(data_dir: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_")}
        env.update({"FREQFLEET_DATA_DIR": str(data_dir), "FREQFLEET_MANAGEMENT_PORT": str(port)})
        result = subprocess.run(
            [sys.executable, "-m", "freqfleet", "up"], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"{port} (FREQFLEET_MANAGEMENT_PORT)" in result.stderr
