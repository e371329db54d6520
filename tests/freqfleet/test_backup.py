"""``freqfleet backup`` / ``freqfleet restore`` as real commands on real PostgreSQL: back up, wipe, restore into
a fresh data dir (its embedded PostgreSQL); users, bots, trades, credentials, model versions and their bundles
come back, and the restored bot starts as a real Freqtrade process. A damaged archive is refused; scheduled
backups keep the newest few."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from freqfleet.embedded import EmbeddedPostgres
from management_server.backups.archive import (
    BackupError,
    backup_set,
    check_targets,
    create_backup,
    opened,
    restore_database,
    targets,
    verify,
)
from management_server.backups.tasks import BACKUP_TASK, SCHEDULE_NAME, run_backup
from management_server.botdb import service as botdb
from management_server.bots import events as bot_events
from management_server.bots.models import Trade
from management_server.config import ManagementSettings
from management_server.credentials import service as credentials
from management_server.credentials.models import ExchangeCredential
from management_server.freqai.models import ModelVersion
from management_server.freqai.store import ModelStore
from management_server.gateways.service import record_heartbeat
from management_server.main import create_app as create_management
from management_server.security.crypto import MasterKeys
from management_server.users.models import Role, User
from management_server.users.service import create_user
from management_server.worker import create_celery
from shared.bus.messages import GatewayHeartbeat, GatewayHeartbeatData, TradeClosed, TradeClosedData
from shared.settings import Environment
from shared.trade_db import bot_url
from tests.enrollment import ensure_enrolled, identity_for
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, free_port, serve, wait_for
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.identity import IDENTITY_FILE
from trading_gateway.main import create_app as create_gateway

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a password to survive the restore"
GATEWAY_ID = "gw-restore"
BUNDLE = b"model bundle bytes " * 1000


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "freqfleet", *args],
        env=clean | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def settings_for(data_dir: Path, database_url: str, redis_url: str, bots_url: str | None = None) -> ManagementSettings:
    """``bots_url``: bots' trades in PostgreSQL databases of their own, made by this provisioning role."""
    return ManagementSettings(
        env=Environment.test,
        data_dir=data_dir,
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
        rate_limit_enabled=False,
        bot_db="sqlite" if bots_url is None else "postgres",
        bot_db_admin_url=None if bots_url is None else SecretStr(bots_url),
    )


async def login(api: httpx.AsyncClient, email: str) -> dict[str, str]:
    answer = await api.post("/auth/token", data={"username": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@asynccontextmanager
async def management_at(settings: ManagementSettings) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str]]:
    app = create_management(settings)
    async with serve(app) as url, httpx.AsyncClient(base_url=url + "/api/v1", timeout=60) as api:
        yield app, api, url


async def counts(database_url: str) -> dict[str, int]:
    """Rows per table (every table of the schema)."""
    url = make_url(database_url)
    port = url.query.get("port")  # a Unix socket's number (a server listening on a TCP port too)
    conn = await asyncpg.connect(
        host=url.query["host"],
        port=int(str(port)) if port else 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        tables = [
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        return {t: int(await conn.fetchval(f'SELECT count(*) FROM "{t}"')) for t in sorted(tables)}  # noqa: S608
    finally:
        await conn.close()


async def populate(settings: ManagementSettings) -> dict[str, Any]:
    """Users, a strategy, a started bot with trades, credentials and a model version with its bundle."""
    async with management_at(settings) as (app, api, _):
        async with app.state.sessionmaker.begin() as session:
            await create_user(session, app.state.password_hasher, "root@example.com", PASSWORD, Role.admin)
            await create_user(session, app.state.password_hasher, "alice@example.com", PASSWORD, Role.user)
            now = datetime.now(UTC)
            beat = GatewayHeartbeat(
                source=f"gateway:{GATEWAY_ID}",
                data=GatewayHeartbeatData(
                    gateway_id=GATEWAY_ID, host="h", version="t", started_at=now, bots_running=0, capacity=5
                ),
            )
            await ensure_enrolled(session, GATEWAY_ID)
            await record_heartbeat(session, beat)
        admin = await login(api, "root@example.com")
        strategy = (
            await api.post("/strategies", json={"name": "market", "source": ALWAYS_ENTER_MARKET}, headers=admin)
        ).json()
        body = {
            "name": "survivor",
            "strategy_id": strategy["id"],
            "pairs": ["BTC/USDT"],
            "timeframe": "1m",
            "stake_amount": "50",
            "max_open_trades": 1,
            "dry_run_wallet": "2000",
            "max_drawdown_ratio": 0.25,
        }
        bot = (await api.post("/bots", json=body, headers=admin)).json()
        started = await api.post(f"/bots/{bot['id']}/start", headers=admin)
        assert started.status_code == 200, started.text
        credential = await api.post(
            "/credentials",
            json={"exchange": "binance", "label": "main", "key": "restore-key-123", "secret": "restore-secret-456"},
            headers=admin,
        )
        assert credential.status_code == 201, credential.text
        async with app.state.sessionmaker.begin() as session:
            for trade_id in (1, 2, 3):
                opened = now - timedelta(hours=trade_id)
                data = TradeClosedData(
                    bot_id=uuid.UUID(bot["id"]), trade_id=trade_id, pair="BTC/USDT", open_date=opened, open_rate=100.0,
                    amount=0.5, stake_amount=50.0, close_date=opened + timedelta(minutes=30), close_rate=101.0,
                    profit_abs=0.5 * trade_id, profit_ratio=0.01 * trade_id,
                )  # fmt: skip
                await bot_events.apply(session, TradeClosed(source=f"gateway:{GATEWAY_ID}", data=data))
            owner = (await session.execute(select(User).where(User.email == "root@example.com"))).scalar_one()
            model = ModelVersion(
                owner_id=owner.id, name="lgbm", version=1, freqai_model="LightGBMRegressor", pairs=["BTC/USDT"],
                timeframe="5m", trained_from=now - timedelta(days=30), trained_to=now, freqai={"enabled": True},
            )  # fmt: skip
            session.add(model)
        ModelStore(settings.model_store, app.state.master_keys).put(model.id, io.BytesIO(BUNDLE))
        analytics = (await api.get(f"/analytics/bots/{bot['id']}", headers=admin)).json()
        bot = (await api.get(f"/bots/{bot['id']}", headers=admin)).json()  # as stored (started: desired running)
        # Its trades as Freqtrade wrote them, in its own PostgreSQL database (FREQFLEET_BOT_DB=postgres).
        async with app.state.sessionmaker() as session:
            stored = await botdb.of(session, uuid.UUID(bot["id"]))
        assert stored is not None
        url = bot_url(stored.name, botdb.password(app.state.master_keys, stored), stored.host, stored.port)
        wrote = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.freqtrade_db", url, "4", "1", cwd=ROOT
        )
        assert await wrote.wait() == 0
        return {
            "bot": bot,
            "model_id": model.id,
            "kid": app.state.keys.active.kid,
            "analytics": analytics,
            "bot_database": stored.name,
        }


@pytest.mark.slow
async def test_backup_wipe_restore_and_the_restored_bot_starts(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    own_server_dir: Path,
    postgres: EmbeddedPostgres,
    simulator: SimulatorProcess,
) -> None:
    source = tmp_path / "source"
    settings = settings_for(source, database_url, redis_url, bots_url=postgres.provisioner_url())
    before = await populate(settings)
    bot_db = before["bot_database"]
    rows = await counts(database_url)
    assert rows["users"] == 2
    assert rows["trades"] == 3
    assert rows["model_versions"] == 1

    made = cli(
        "backup",
        "--output",
        str(tmp_path / "archives"),
        env={
            "FREQFLEET_DATA_DIR": str(source),
            "FREQFLEET_DATABASE_URL": database_url,
            "FREQFLEET_BOT_DB_ADMIN_URL": postgres.provisioner_url(),
        },
    )
    assert made.returncode == 0, made.stdout + made.stderr
    [archive] = list((tmp_path / "archives").glob("freqfleet-backup-*.tar.enc"))
    assert str(archive) in made.stdout
    assert archive.stat().st_mode & 0o777 == 0o600
    # Encrypted with the backup key made in the data dir (kept elsewhere by the operator; never in the archive).
    kept_key = tmp_path / "kept-backup.key"
    shutil.copy(source / "backup.key", kept_key)
    assert (source / "backup.key").stat().st_mode & 0o777 == 0o600
    assert b"master" not in archive.read_bytes()
    with opened(archive, (source / "backup.key").read_text().strip().encode()) as plain:
        manifest = verify(plain)
    assert manifest["schema_revision"] == (await _revision(database_url))
    assert manifest["bot_databases"] == [f"bot-databases/{bot_db}.dump"]  # the bot's trades, as Freqtrade wrote them
    saved = {p["name"]: p["kind"] for p in manifest["paths"]}
    assert saved == {
        "model-store": "dir",
        "model-signing-keys": "dir",
        "command-signing-keys": "dir",
        "keys": "dir",
        "master.keys": "file",
    }
    assert "backup.key" not in json.dumps(manifest)

    # Wipe: the database and the data dir are gone.
    name = make_url(database_url).database
    admin_conn = await asyncpg.connect(
        host=str(postgres.socket_dir),
        port=postgres.port,
        user="postgres",
        password=postgres.superuser_password,
        database="postgres",
    )
    await admin_conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin_conn.execute(f'DROP DATABASE "{bot_db}" WITH (FORCE)')
    await admin_conn.execute(f'DROP ROLE "{bot_db}"')
    await admin_conn.close()
    shutil.rmtree(source)

    # Restore into a fresh data dir, whose embedded PostgreSQL the restore starts (and stops).
    fresh = own_server_dir / "data"
    keyless = cli("restore", str(archive), env={"FREQFLEET_DATA_DIR": str(fresh)})
    assert keyless.returncode == 1
    assert "is encrypted: give its backup key" in keyless.stderr
    wrong = cli("restore", str(archive), env={"FREQFLEET_DATA_DIR": str(fresh), "FREQFLEET_BACKUP_KEY": "not it"})
    assert wrong.returncode == 1
    assert "does not open with this backup key" in wrong.stderr
    assert not (fresh / "postgres").exists()
    with_key = {"FREQFLEET_DATA_DIR": str(fresh), "FREQFLEET_BACKUP_KEY_FILE": str(kept_key)}
    done = cli("restore", str(archive), env=with_key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restored the backup of" in done.stdout
    again = cli("restore", str(archive), env=with_key)
    assert again.returncode == 1
    assert "restore into a fresh" in again.stderr

    assert "1 bots' trade databases" in done.stdout
    server = EmbeddedPostgres(fresh, port=free_port())  # TCP as well: the restored bot reaches its database there
    server.start()
    gateway_settings: GatewaySettings | None = None
    try:
        assert await counts(server.url()) == rows  # every table, every row
        trades = await _bot_trades(server, bot_db)
        assert (len(trades), sum(1 for t in trades if t["is_open"])) == (5, 1)  # the bot's own database too
        restored = settings_for(fresh, server.url(), redis_url, bots_url=server.provisioner_url())
        fresh_redis = aioredis.Redis.from_url(redis_url)
        await fresh_redis.flushall()  # a new Redis, too
        await fresh_redis.aclose()
        async with management_at(restored) as (app, api, management_url):
            assert app.state.keys.active.kid == before["kid"]  # the same signing keys
            admin = await login(api, "root@example.com")  # the same password hashes
            await login(api, "alice@example.com")
            bot = (await api.get(f"/bots/{before['bot']['id']}", headers=admin)).json()
            assert bot == before["bot"]  # every field, desired state and settings included
            assert (bot["desired_state"], bot["generation"], bot["gateway_id"]) == ("running", 1, GATEWAY_ID)
            figures = (await api.get(f"/analytics/bots/{bot['id']}", headers=admin)).json()
            assert figures | {"generated_at": None} == before["analytics"] | {"generated_at": None}
            async with app.state.sessionmaker() as session:
                row = (await session.execute(select(ExchangeCredential))).scalar_one()
                revealed = credentials.reveal(MasterKeys.from_file(fresh / "master.keys"), row)  # the same master keys
                assert revealed.key.get_secret_value() == "restore-key-123"
                assert await session.scalar(select(func.count()).select_from(ModelVersion)) == 1
                assert (
                    await session.scalar(
                        select(func.count()).select_from(Trade).where(Trade.bot_id == uuid.UUID(bot["id"]))
                    )
                    == 3
                )
            out = io.BytesIO()
            ModelStore(restored.model_store, app.state.master_keys).copy_to(before["model_id"], out)
            assert out.getvalue() == BUNDLE

            # The restored bot starts: a real Freqtrade process on its (same-named) gateway.
            ports = random.randrange(20_000, 60_000, 100)
            gateway_settings = GatewaySettings(
                env=Environment.test, data_dir=fresh, redis_url=SecretStr(redis_url), gateway_id=GATEWAY_ID,
                management_url=management_url,
                simulator_url=simulator.url, bot_port_range_start=ports, bot_port_range_end=ports + 4,
                heartbeat_interval=1.0, status_interval=0.5, bot_process_throttle_secs=1, stop_bots_on_shutdown=True,
            )  # fmt: skip
            # The gateway's host kept its identity (only the management host was restored).
            identity_for(GATEWAY_ID).save(gateway_settings.gateway_data_dir / IDENTITY_FILE)
            async with serve(create_gateway(gateway_settings)):

                async def started() -> bool:
                    answer = await api.post(f"/bots/{bot['id']}/start", headers=admin)
                    return answer.status_code == 200 and answer.json()["notice"] is None

                await async_wait_for(started, timeout=30, interval=0.5, what="the restored gateway to be live")

                async def running() -> bool:
                    found = (await api.get(f"/bots/{bot['id']}", headers=admin)).json()
                    return bool(found["actual_state"] == "running")

                await async_wait_for(running, timeout=90, interval=0.5, what="the restored bot running")
                # It trades on its restored database, on the new server (the management server pointed the bot
                # databases at it when it started), as its own role.
                sessions = await _sessions_of(server, bot_db)
                assert sessions >= 1
    finally:
        if gateway_settings is not None:
            for orphan in find_orphans(gateway_settings.gateway_data_dir / "bots"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(orphan.pid, signal.SIGKILL)
        server.stop()


async def _bot_trades(server: EmbeddedPostgres, name: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(server.provisioner_url(socket=True).replace("/postgres?", f"/{name}?"))
    try:
        return list(await conn.fetch("SELECT id, is_open FROM trades ORDER BY id"))
    finally:
        await conn.close()


async def _sessions_of(server: EmbeddedPostgres, role: str) -> int:
    conn = await asyncpg.connect(server.provisioner_url(socket=True))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role))
    finally:
        await conn.close()


async def _revision(database_url: str) -> str:
    url = make_url(database_url)
    port = url.query.get("port")  # a Unix socket's number (a server listening on a TCP port too)
    conn = await asyncpg.connect(
        host=url.query["host"],
        port=int(str(port)) if port else 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


async def test_a_damaged_archive_or_a_used_target_is_refused(database_url: str, redis_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "a.pem").write_text("not really a key")
    (data / "master.keys").write_text("k1:xyz")
    paths = backup_set(data, [Path("keys"), Path("master.keys"), Path("model-store")])
    sealed = await asyncio.to_thread(create_backup, database_url, paths, tmp_path / "out", b"the backup key")
    archive = tmp_path / "plain.tar"  # the tar inside, to craft archives of the first (unencrypted) format from
    with opened(sealed, b"the backup key") as plain:
        shutil.copy(plain, archive)
    manifest = verify(archive)
    assert {p["name"]: p["kind"] for p in manifest["paths"]} == {
        "keys": "dir",
        "master.keys": "file",
        "model-store": "missing",
    }
    with pytest.raises(BackupError, match="exists already: restore into a fresh data dir"):
        check_targets(manifest, data)
    check_targets(manifest, tmp_path / "elsewhere")
    with pytest.raises(BackupError, match=r"has \d+ tables already: restore into an empty database"):
        await asyncio.to_thread(restore_database, archive, database_url)

    # One byte changed in a member: the archive is refused before anything is touched.
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as tar, tarfile.open(damaged, "w") as out:
        for member in tar.getmembers():
            body = tar.extractfile(member)
            assert body is not None
            content = body.read()
            if member.name == "files/keys/a.pem":
                content = content.replace(b"not", b"NOT")
            out.addfile(member, io.BytesIO(content))
    with pytest.raises(BackupError, match=r"files/keys/a\.pem is damaged"):
        verify(damaged)
    with tarfile.open(tmp_path / "other.tar", "w") as out:
        body = b'{"format": "something else"}'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        out.addfile(info, io.BytesIO(body))
    with pytest.raises(BackupError, match="not a Freqfleet backup"):
        verify(tmp_path / "other.tar")

    # Crafted manifests: a target that climbs out is refused before anything is written; an absolute target (a
    # path saved from outside the data dir) comes back inside the data dir; a link is never a member.
    def crafted(name: str, change: Callable[[dict[str, Any]], None], link: bool = False) -> Path:
        out_path = tmp_path / name
        with tarfile.open(archive) as tar, tarfile.open(out_path, "w") as out:
            for member in tar.getmembers():
                body = tar.extractfile(member)
                assert body is not None
                content = body.read()
                if member.name == "manifest.json":
                    doc = json.loads(content)
                    change(doc)
                    content = json.dumps(doc).encode()
                    member.size = len(content)
                out.addfile(member, io.BytesIO(content))
            if link:
                info = tarfile.TarInfo("files/keys/evil")
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                out.addfile(info)
        return out_path

    def climb(doc: dict[str, Any]) -> None:
        doc["paths"][0]["restore_to"] = "../../outside"

    def absolute(doc: dict[str, Any]) -> None:
        doc["paths"][0]["restore_to"] = str(tmp_path / "absolute-target")

    with pytest.raises(BackupError, match="would be restored to"):
        verify(crafted("climb.tar", climb))
    with pytest.raises(BackupError, match=r"members and manifest differ|not a plain file"):
        verify(crafted("link.tar", lambda doc: None, link=True))
    elsewhere = crafted("absolute.tar", absolute)
    placed = [target for _, target in targets(verify(elsewhere), tmp_path / "fresh")]
    assert all((tmp_path / "fresh").resolve() in p.parents for p in placed), placed
    fresh_env = {"FREQFLEET_DATA_DIR": str(tmp_path / "new"), "FREQFLEET_DATABASE_URL": database_url}
    untrusted = cli("restore", str(crafted("climb2.tar", climb)), env=fresh_env)
    assert untrusted.returncode == 1
    assert "is not encrypted" in untrusted.stderr  # a plain tar proves nothing about who wrote it
    climbed = cli("restore", str(crafted("climb2.tar", climb)), "--trust-unencrypted", env=fresh_env)
    assert climbed.returncode == 1
    assert "would be restored to" in climbed.stderr
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "new").exists()

    refused = cli("restore", str(damaged), "--trust-unencrypted", env=fresh_env)
    assert refused.returncode == 1
    assert "is damaged" in refused.stderr
    assert not (tmp_path / "new").exists()

    # The encrypted archive: one byte changed anywhere, a chunk cut off, or the wrong key, and nothing opens.
    body = sealed.read_bytes()
    for name, content, reason in (
        ("flipped.tar.enc", body[:-100] + bytes([body[-100] ^ 1]) + body[-99:], "a changed archive|was changed"),
        ("cut.tar.enc", body[: len(body) // 2], "was changed or cut short|does not open"),
        ("header.tar.enc", body.replace(b'"n": 32768', b'"n": 16384', 1), "does not open with this backup key"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BackupError, match=reason), opened(tmp_path / name, b"the backup key"):
            pass
    with pytest.raises(BackupError, match="does not open with this backup key"), opened(sealed, b"another key"):
        pass
    with pytest.raises(BackupError, match="is encrypted: give its backup key"), opened(sealed, None):
        pass


async def test_scheduled_backups_run_on_beat_and_keep_the_newest(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path / "data", database_url, redis_url).model_copy(
        update={"backup_keep": 2, "backup_interval_hours": 6.0}
    )
    app = create_celery(settings, results=False)
    schedule = app.conf.beat_schedule[SCHEDULE_NAME]
    assert (schedule["task"], schedule["schedule"]) == (BACKUP_TASK, timedelta(hours=6))
    assert BACKUP_TASK in app.tasks
    results = [await asyncio.to_thread(run_backup, settings) for _ in range(3)]
    assert [len(r["deleted"]) for r in results] == [0, 0, 1]
    kept = sorted(p.name for p in settings.backups.glob("freqfleet-backup-*.tar.enc"))
    assert kept == sorted(Path(r["archive"]).name for r in results[1:])
    off = create_celery(settings.model_copy(update={"backup_interval_hours": 0}), results=False)
    assert SCHEDULE_NAME not in (off.conf.beat_schedule or {})


@pytest.mark.slow
def test_a_worker_with_beat_makes_the_scheduled_backups(database_url: str, redis_url: str, tmp_path: Path) -> None:
    """``freqfleet worker`` with FREQFLEET_WORKER_BEAT: beat sends the backup task on schedule, the worker runs
    it, only the newest archives stay, and the worker's /metrics counts them."""
    backups = tmp_path / "backups"
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env = clean | {
        "FREQFLEET_DATA_DIR": str(tmp_path / "data"),
        "FREQFLEET_DATABASE_URL": database_url,
        "FREQFLEET_REDIS_URL": redis_url,
        "FREQFLEET_WORKER_BEAT": "true",
        "FREQFLEET_BACKUP_INTERVAL_HOURS": "0.0005",  # every 1.8 s
        "FREQFLEET_BACKUP_KEEP": "2",
        "FREQFLEET_BACKUP_DIR": str(backups),
        "FREQFLEET_CELERY_CONCURRENCY": "1",
        "FREQFLEET_WORKER_METRICS_PORT": str(metrics_port := free_port()),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "freqfleet", "worker"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        try:
            wait_for(lambda: "old backups deleted" in log.read_text(), timeout=120, what="a third backup and retention")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the worker wrote:\n{log.read_text(errors='replace')[-3000:]}") from None
        kept = list(backups.glob("freqfleet-backup-*.tar.enc"))
        assert 1 <= len(kept) <= 2
        key = (tmp_path / "data" / "backup.key").read_text().strip().encode()  # made by the first backup
        for archive in kept:
            with opened(archive, key) as plain:
                verify(plain)
        # The worker's own /metrics: what its pool processes counted (training durations show there too).
        exposition = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        made = [
            line for line in exposition.splitlines() if line.startswith('freqfleet_backups_total{outcome="succeeded"}')
        ]
        assert made, exposition[-2000:]
        assert float(made[0].split()[-1]) >= 3  # counted in the pool process, served by the main one
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
