"""A live bot's exchange keys, end to end: in the clear only in that bot's 0600 config on its gateway.

A real management server and a real gateway (in this process), the session's Valkey and PostgreSQL. A live bot
on Binance is started with marker credentials; there is no network here, so its Freqtrade fails to reach the
exchange, but by then the gateway has opened the keys into the bot's config. Then everything else is searched
for the markers: both data dirs, Valkey's own files and every key and stream in it, the outbox table, and a fresh
backup archive (and the tar inside it).
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text

from freqfleet.embedded import EmbeddedValkey
from management_server.backups.archive import backup_set, create_backup, opened
from management_server.config import ManagementSettings
from tests.helpers import async_wait_for
from tests.management_server.conftest import bearer
from tests.trading_gateway.mcp.conftest import running_stack


def holders(root: Path, markers: list[bytes]) -> list[Path]:
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                content = path.read_bytes()
            except OSError:
                continue
            if any(m in content for m in markers):
                found.append(path)
    return found


def readable_by_others(root: Path) -> list[str]:
    """Files and folders under ``root`` that other users may read or write (a folder: list or enter)."""
    loose = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or stat.S_ISSOCK(mode):
                continue
            if mode & 0o007:
                loose.append(f"{oct(stat.S_IMODE(mode))} {path}")
    return loose


async def test_marker_credentials_are_only_in_the_bots_config(
    management_settings: ManagementSettings, redis_url: str, valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    management_settings = management_settings.model_copy(update={"data_dir": tmp_path / "management"})
    old_umask = os.umask(0o077)  # as every Freqfleet service runs (freqfleet/cli.py)
    key, secret = f"KEYPROBE-{uuid.uuid4().hex}", f"SECRETPROBE-{uuid.uuid4().hex}"
    markers = [key.encode(), secret.encode()]
    try:
        async with running_stack(management_settings, redis_url, tmp_path / "gateway-data") as stack:
            admin = await stack.admin()
            token = admin["Authorization"].removeprefix("Bearer ")
            await stack.gateway_known()
            stored = {"exchange": "binance", "label": "probe", "key": key, "secret": secret}
            credentials = await stack.api.post("/api/v1/credentials", json=stored, headers=admin)
            assert credentials.status_code == 201, credentials.text
            bot_id = await stack.bot(
                token,
                "live-probe",
                dry_run=False,
                exchange="binance",
                credentials_id=credentials.json()["id"],
                timeframe="5m",
            )
            started = await stack.api.post(f"/api/v1/bots/{bot_id}/start", headers=bearer(token))
            assert started.status_code == 200, started.text
            config = stack.settings.gateway_data_dir / "bots" / bot_id / "config.json"
            await async_wait_for(
                lambda: asyncio.to_thread(_has, config, markers),
                timeout=60,
                what="the bot's config written with its exchange keys",
            )
            assert stat.S_IMODE(config.stat().st_mode) == 0o600
            # The markers: in that config, nowhere else on the gateway's disk (its spec keeps them sealed).
            assert holders(stack.settings.gateway_data_dir, markers) == [config]
            # A fresh backup of the management server (encrypted; and the tar inside holds only ciphertext).
            archive = await asyncio.to_thread(
                create_backup,
                management_settings.database_url.get_secret_value(),
                backup_set(management_settings.data_dir, management_settings.backup_sources()),
                tmp_path / "backups",
                b"backup key",
            )
            assert not any(m in archive.read_bytes() for m in markers)
            with opened(archive, b"backup key") as plain:
                assert not any(m in plain.read_bytes() for m in markers)
            async with stack.management.app.state.sessionmaker() as session:
                envelopes = (await session.execute(text("SELECT envelope FROM outbox_messages"))).scalars().all()
            assert any(bot_id in e for e in envelopes)  # the START_BOT is there ...
            assert not [e for e in envelopes if any(m.decode() in e for m in markers)]  # ... sealed
            # Redis: every key and stream entry, and Valkey's files on disk.
            client = aioredis.Redis.from_url(redis_url)
            try:
                names: Any = await client.keys("*")
                for name in names:
                    content = await _contents(client, name)
                    assert not any(m in content for m in markers), name
            finally:
                await client.aclose()
            assert holders(valkey.dir, markers) == []
            assert holders(management_settings.data_dir, markers) == []
            # Nothing the services made is open to other users.
            assert readable_by_others(management_settings.data_dir) == []
            assert readable_by_others(stack.settings.gateway_data_dir) == []
            await stack.api.post(f"/api/v1/bots/{bot_id}/stop", headers=bearer(token))
    finally:
        os.umask(old_umask)


def _has(path: Path, markers: list[bytes]) -> bool:
    try:
        content = path.read_bytes()
    except OSError:
        return False
    return all(m in content for m in markers)


async def _contents(client: aioredis.Redis, name: bytes) -> bytes:
    if (await client.type(name)) == b"stream":
        entries: Any = await client.xrange(name)
        return b"\n".join(v for _, fields in entries for v in fields.values())
    dumped: Any = await client.dump(name)
    return bytes(dumped or b"")
