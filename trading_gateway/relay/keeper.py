"""The gateway's side of the relay: start it, keep it alive, tell bots where it is, read its numbers.

The relay is a process of its own (``python -m trading_gateway.relay``) on a port kept in the gateway's data folder
(``relay/relay.json``), so bots' configs stay right across restarts of the relay and of the gateway. The keeper
checks it every second; when it is gone or stops answering it is started again on the same port, and bots, whose
requests failed meanwhile as a network error Freqtrade retries, carry on at their next loop. It dies with the
gateway (the gateway starts a fresh one when it comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from shared.files import atomic_write, open_append_nofollow
from shared.logging import get_logger
from trading_gateway.bots.process import bot_environment
from trading_gateway.config import GatewaySettings
from trading_gateway.relay.adapters import adapter_for

log = get_logger(__name__)

CHECK_INTERVAL = 1.0
START_TIMEOUT = 20.0
FAILED_CHECKS = 3  # checks in a row without an answer before a live but silent relay is replaced
MAX_RETRY_WAIT = 60.0  # seconds between tries to start a relay that keeps failing to start


def relay_folder(gateway_data: Path) -> Path:
    return gateway_data / "relay"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RelayKeeper:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.folder = relay_folder(settings.gateway_data_dir)
        self.upstreams = {"simulator": settings.simulator_url}
        self.port = 0
        self.starts = 0
        self.last_stats: dict[str, Any] | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, exchange: str, bot_id: str) -> str | None:
        """The base URL a bot on ``exchange`` uses instead of the exchange's (ccxt adds the API prefix); None when
        the relay does not carry that exchange."""
        if self.port == 0 or exchange not in self.upstreams or adapter_for(exchange) is None:
            return None
        return f"{self.base_url}/x/{exchange}/{bot_id}"

    def _choose_port(self) -> int:
        record = self.folder / "relay.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kept = int(json.loads(record.read_text())["port"])
            if self.settings.relay_port in (0, kept):
                return kept
        port = self.settings.relay_port or _free_port()
        atomic_write(record, json.dumps({"port": port}).encode(), mode=0o600)
        return port

    async def start(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.port = self._choose_port()
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=2.0)
        await self._spawn()
        self._task = asyncio.create_task(self._watch(), name="relay-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._end)
        if self._client is not None:
            await self._client.aclose()

    def _end(self) -> None:
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.terminate()
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)

    async def _spawn(self) -> bool:
        """Start the relay and wait until it answers; whether it did."""
        argv = [sys.executable, "-I", "-m", "trading_gateway.relay", "--port", str(self.port)]
        argv += ["--gateway-id", self.settings.gateway_id, "--parent", str(os.getpid())]
        argv += ["--cache-mb", str(self.settings.relay_cache_mb), "--share", str(self.settings.relay_weight_share)]
        argv += ["--max-wait", str(self.settings.relay_max_wait)]
        for exchange, url in self.upstreams.items():
            argv += ["--upstream", f"{exchange}={url}"]
        self._popen = self._run(argv)
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                break
            if await self._healthy():
                log.info("relay ready", port=self.port, pid=self._popen.pid, starts=self.starts)
                return True
            await asyncio.sleep(0.1)
        log.error(
            "the relay did not start: bots' market data fails until it does (see relay.log)",
            port=self.port,
            exit_code=self._popen.poll(),
        )
        return False

    def _run(self, argv: list[str]) -> subprocess.Popen[bytes]:
        # From the event loop's thread (a fork and an exec: milliseconds): the relay's death signal is tied to the
        # thread that started it, and this one lives as long as the gateway.
        with open_append_nofollow(self.folder / "relay.log") as out:
            os.fchmod(out.fileno(), 0o600)
            return subprocess.Popen(
                argv, env=bot_environment(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    async def _healthy(self) -> bool:
        assert self._client is not None
        try:
            answer = await self._client.get("/_relay/stats")
        except httpx.HTTPError:
            return False
        if answer.status_code != 200:
            return False
        try:
            stats: dict[str, Any] = answer.json()
        except ValueError:
            return False  # something else has the port
        if not isinstance(stats, dict) or stats.get("gateway_id") != self.settings.gateway_id:
            return False  # something else has the port
        self.last_stats = stats
        return True

    async def _watch(self) -> None:
        missed = failures = 0
        while True:
            # After starts that failed (its port taken, a broken install), wait longer each time, up to a minute.
            await asyncio.sleep(CHECK_INTERVAL if not failures else min(MAX_RETRY_WAIT, 2.0**failures))
            try:
                popen = self._popen
                exited = popen is None or popen.poll() is not None
                missed = 0 if not exited and await self._healthy() else missed + 1
                if exited or missed >= FAILED_CHECKS:
                    code = None if popen is None else popen.returncode
                    log.warning("relay gone: starting it again", exit_code=code, missed_checks=missed, port=self.port)
                    self.last_stats = None
                    if popen is not None and popen.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            popen.send_signal(signal.SIGKILL)
                        await asyncio.to_thread(popen.wait)
                    failures = 0 if await self._spawn() else failures + 1
                    missed = 0
            except Exception:  # the keeper must outlive a surprise: bots depend on it
                log.exception("relay keeper check failed")

    def bot_numbers(self, bot_id: str) -> dict[str, float] | None:
        """The bot's numbers at the relay (requests, hits, misses, coalesced, weight, queue wait...), as of the last
        check; None before its first request."""
        if self.last_stats is None:
            return None
        found = self.last_stats.get("bots", {}).get(bot_id)
        if not isinstance(found, dict):
            return None
        return {k: float(v) for k, v in found.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    def summary(self) -> dict[str, Any] | None:
        """The heartbeat's part: per exchange its budget and totals, and the cache (per-bot numbers are on the
        gateway's ``/api/v1/bots`` and the relay's ``/metrics``)."""
        if self.last_stats is None:
            return None
        return {
            "port": self.port,
            "starts": self.starts,
            "exchanges": self.last_stats.get("exchanges", {}),
            "cache": self.last_stats.get("cache", {}),
        }
