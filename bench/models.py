"""FreqAI model bundles of about 10 MB and 50 MB from the registry to swapped in, beside a bare XADD/XREAD of the
same bytes on the same Redis in the same run; the gateway's peak memory during the transfer.

Everything runs on this machine as real processes in a temporary folder: an embedded PostgreSQL (migrated) and
Valkey, ``freqfleet simulator``, ``freqfleet management`` and ``freqfleet gateway`` (production defaults, JSON
logs to files). The bundles are real: one FreqAI training (``shared.freqai.training``, FreqaiExample with 145
features over three timeframes and a DI threshold, so each pair's feature pipeline carries its training matrix)
on the simulator's candles for every pair, packed (``pack_bundle``) three ways from the same model folder: three
pairs (the model the bot starts with), two pairs (about 10 MB) and ten pairs (about 50 MB). They are registered
through ``POST /api/v1/models/upload`` (encrypted into the model store), and a FreqAI bot trading two of the pairs
starts with the first one.

Per bundle, in one run:

1. **Baseline, bare**: the compressed bundle (what travels) as one stream entry: ``XADD`` of the bytes, then
   ``XREAD`` of them on a second connection, on the same Valkey; the median of three rounds.
2. **Ours**: ``POST /api/v1/bots/{id}/model`` until ``GET /api/v1/bots/{id}/model`` reads ``loaded`` for it
   (polled every 50 ms): the management server decrypts the bundle from the store, signs it and writes its
   chunks to Redis, the outbox relay publishes UPDATE_MODEL, the gateway reads the chunks, verifies size,
   signature and sha256, decompresses, unpacks and installs it, the running bot (same process) swaps it in
   and predicts with it, the gateway reports MODEL_LOADED, the management server records it. Also the bot's own
   part (``load_seconds``: from the install to its first prediction with it) and the peak RSS of the gateway
   and management processes above their level just before (sampled every 10 ms), which shows whether memory
   stays bounded by a chunk rather than growing with the bundle.

All three bundles share the training's ``freqai`` section, so each swap is an in-process swap (no
``reload_config``); a larger bundle costs transfer, verification and unpacking of more pairs, while the bot
loads its two pairs either way.

    python -m bench.run models [--quick]     (or: python -m bench.models [--quick])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import redis.asyncio as aioredis
from pydantic import SecretStr

from bench._common import ROOT, BenchError, free_port, free_range, own_env
from exchange_simulator.config import DEFAULT_PAIRS
from freqfleet import database
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from management_server.config import ManagementSettings
from shared.freqai.bundle import PackedBundle, pack_bundle
from shared.freqai.training import TrainingRequest, TrainingResult, train_model
from shared.settings import Environment
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.identity import load_or_create

STRATEGY = (ROOT / "examples" / "strategies" / "FreqaiExample.py").read_text()
STRATEGY_CLASS = "FreqaiExample"
EMAIL = "bench@example.com"
PASSWORD = secrets.token_urlsafe(16)  # the bench's own admin, in a throwaway database
GATEWAY_ID = "gw-bench-models"
BOT_PAIRS = ["BTC/USDT", "ETH/USDT"]
FREQAI: dict[str, Any] = {
    "feature_parameters": {
        "include_timeframes": ["5m", "15m", "1h"],
        "indicator_periods_candles": [10, 20, 30, 50, 100],
        "include_shifted_candles": 2,
        "DI_threshold": 0.9,
        "label_period_candles": 12,
    },
    "model_training_parameters": {"n_estimators": 200},
}
DEPLOY_TIMEOUT = 600.0
START_TIMEOUT = 900.0
SAMPLE_INTERVAL = 0.01
MIB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    days: int  # training days: about 0.3 MB per pair and day (raw) with these features
    pairs: tuple[str, ...]  # trained; the large bundle holds them all
    rounds: int  # bare XADD/XREAD rounds

    @property
    def bundles(self) -> dict[str, list[str]]:
        return {"start": list(self.pairs[:3]), "small": BOT_PAIRS, "large": list(self.pairs)}


FULL = Profile(days=17, pairs=DEFAULT_PAIRS, rounds=3)
QUICK = Profile(days=4, pairs=DEFAULT_PAIRS[:4], rounds=3)


# --------------------------------------------------------------------------------------------- processes


@dataclass
class Stack:
    root: Path
    pg: EmbeddedPostgres | None = None
    valkey: EmbeddedValkey | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        return own_env() | {"FREQFLEET_LOG_FORMAT": "json", "FREQFLEET_LOG_LEVEL": "INFO"} | extra

    def spawn(self, name: str, env: dict[str, str], health: str) -> None:
        out = (self.root / f"{name}.log").open("wb")
        self.logs.append(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "freqfleet", name],
            env=self._env(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"freqfleet {name} exited with code {proc.returncode}; see {self.root}/{name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"freqfleet {name} did not answer within 90 s")

    def start_servers(self) -> None:
        self.data_dir.mkdir(parents=True)
        self.pg = EmbeddedPostgres(self.root / "pg")
        self.pg.start()
        database.upgrade(self.pg.url())
        self.valkey = EmbeddedValkey(self.root / "valkey", free_port())
        self.valkey.start()
        port = free_port()
        self.urls["simulator"] = f"http://127.0.0.1:{port}"
        self.spawn("simulator", {"FREQFLEET_SIMULATOR_PORT": str(port)}, f"{self.urls['simulator']}/_sim/health")

    def start_services(self) -> None:
        assert self.pg is not None
        assert self.valkey is not None
        settings = ManagementSettings(
            env=Environment.test,
            data_dir=self.data_dir,
            database_url=SecretStr(self.pg.url()),
            redis_url=SecretStr(self.valkey.url),
        )
        database.create_admin(settings, EMAIL, PASSWORD)
        # Only an enrolled gateway gets bots: its identity made where it will find it, and enrolled (as `up` does).
        identity = load_or_create(self.data_dir / "gateway" / GATEWAY_ID, GATEWAY_ID)
        database.enroll_gateway(settings, identity.enrollment())
        common = {
            "FREQFLEET_DATA_DIR": str(self.data_dir),
            "FREQFLEET_DATABASE_URL": self.pg.url(),
            "FREQFLEET_REDIS_URL": self.valkey.url,
            "FREQFLEET_SIMULATOR_URL": self.urls["simulator"],
        }
        mport, gport, first = free_port(), free_port(), free_range(20)
        self.urls["management"] = f"http://127.0.0.1:{mport}"
        self.urls["gateway"] = f"http://127.0.0.1:{gport}"
        self.spawn(
            "management",
            common | {"FREQFLEET_MANAGEMENT_PORT": str(mport), "FREQFLEET_RATE_LIMIT_ENABLED": "false"},
            f"{self.urls['management']}/health/ready",
        )
        self.spawn(
            "gateway",
            common
            | {
                "FREQFLEET_GATEWAY_ID": GATEWAY_ID,
                "FREQFLEET_GATEWAY_PORT": str(gport),
                "FREQFLEET_MANAGEMENT_URL": self.urls["management"],
                "FREQFLEET_BOT_PORT_RANGE_START": str(first),
                "FREQFLEET_BOT_PORT_RANGE_END": str(first + 19),
                "FREQFLEET_STOP_BOTS_ON_SHUTDOWN": "true",
            },
            f"{self.urls['gateway']}/health/ready",
        )

    def stop(self) -> None:
        for name in ("gateway", "management", "simulator"):  # the gateway first: it stops its bot
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for orphan in find_orphans(self.data_dir / "gateway" / GATEWAY_ID / "bots"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan.pid, signal.SIGKILL)
        if self.valkey is not None:
            self.valkey.stop()
        if self.pg is not None:
            self.pg.stop()
        for out in self.logs:
            out.close()


# --------------------------------------------------------------------------------------------- measuring


class PeakRss:
    """The highest RSS of some processes, sampled in a thread, above their RSS when it started."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.base = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
            self._stop.wait(SAMPLE_INTERVAL)

    @contextlib.contextmanager
    def running(self) -> Iterator[PeakRss]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def growth_mib(self, name: str) -> float:
        return (self.peak[name] - self.base[name]) / MIB

    def base_mib(self, name: str) -> float:
        return self.base[name] / MIB


async def bare_roundtrip(redis_url: str, payload: bytes, rounds: int) -> tuple[float, float]:
    """Median seconds of an XADD of ``payload`` as one entry, and of the XREAD of it on another connection."""
    writer = aioredis.Redis.from_url(redis_url)
    reader = aioredis.Redis.from_url(redis_url)
    adds, reads = [], []
    try:
        for _ in range(rounds):
            stream = f"bench:models:{uuid.uuid4()}"
            started = time.perf_counter()
            entry = await writer.xadd(stream, {"content": payload})
            adds.append(time.perf_counter() - started)
            started = time.perf_counter()
            answer: Any = await reader.xread({stream: "0-0"}, count=1)
            reads.append(time.perf_counter() - started)
            got = answer[0][1][0]
            if got[0] != entry or got[1][b"content"] != payload:
                raise BenchError("XREAD did not give back what XADD wrote")
            await writer.delete(stream)
    finally:
        await writer.aclose()
        await reader.aclose()
    return statistics.median(adds), statistics.median(reads)


# --------------------------------------------------------------------------------------------- the run


def train(profile: Profile, workdir: Path, simulator_url: str) -> TrainingResult:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=7)
    request = TrainingRequest(
        strategy_source=STRATEGY,
        strategy_class=STRATEGY_CLASS,
        pairs=list(profile.pairs),
        timeframe="5m",
        end=end,
        days=profile.days,
        freqai=FREQAI,
    )
    return train_model(request, workdir=workdir, simulator_url=simulator_url, timeout=3600)


def pack(result: TrainingResult, pairs: list[str], dest: Path) -> PackedBundle:
    return pack_bundle(
        result.model_dir,
        dest,
        freqai_model=result.freqai_model,
        timeframe=result.timeframe,
        freqai=result.freqai,
        trained_from=result.trained_from,
        trained_to=result.trained_to,
        metrics={p: result.metrics[p] for p in pairs if p in result.metrics},
        pairs=pairs,
    )


async def _call(client: httpx.AsyncClient, method: str, url: str, expect: int, **kwargs: Any) -> Any:
    response = await client.request(method, url, **kwargs)
    if response.status_code != expect:
        raise BenchError(f"{method} {url} answered {response.status_code}: {response.text[:500]}")
    return response.json()


async def _bot_model(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str) -> Any:
    return await _call(client, "GET", f"/bots/{bot_id}/model", 200, headers=headers)


async def wait_loaded(
    client: httpx.AsyncClient, headers: dict[str, str], bot_id: str, model_id: str, timeout: float, interval: float
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await _bot_model(client, headers, bot_id)
        if body["model_loaded_id"] == model_id and body["model_state"] == "loaded":
            return body
        if body["model_state"] == "rejected" and body["history"] and body["history"][0]["model_id"] == model_id:
            raise BenchError(f"model {model_id} was refused: {body['history'][0]['reason']}")
        await asyncio.sleep(interval)
    raise BenchError(f"model {model_id} not loaded within {timeout:g} s: {await _bot_model(client, headers, bot_id)}")


async def measure(stack: Stack, profile: Profile, bundles: dict[str, PackedBundle]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=f"{stack.urls['management']}/api/v1", timeout=600) as client:
        token = await _call(client, "POST", "/auth/token", 200, data={"username": EMAIL, "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        strategy = await _call(
            client, "POST", "/strategies", 201, json={"name": "freqai", "source": STRATEGY}, headers=headers
        )
        ids: dict[str, str] = {}
        for name, packed in bundles.items():
            uploaded = await _call(
                client,
                "POST",
                "/models/upload",
                201,
                files={"file": (f"{name}.tar.zst", packed.path.read_bytes())},
                data={"name": f"bench-{name}", "strategy_class": STRATEGY_CLASS},
                headers=headers,
            )
            ids[name] = uploaded["id"]
        bot = await _call(
            client,
            "POST",
            "/bots",
            201,
            json={
                "name": "bench-freqai",
                "strategy_id": strategy["id"],
                "pairs": BOT_PAIRS,
                "timeframe": "5m",
                "stake_amount": "10",
                "model_id": ids["start"],
            },
            headers=headers,
        )
        bot_id = bot["id"]
        started = time.monotonic()
        await _call(client, "POST", f"/bots/{bot_id}/start", 200, headers=headers)
        await wait_loaded(client, headers, bot_id, ids["start"], START_TIMEOUT, 0.5)
        print(f"bot started with its model and predicting after {time.monotonic() - started:.1f} s", flush=True)
        pids = {"gateway": stack.procs["gateway"].pid, "management": stack.procs["management"].pid}
        rows = []
        for name in ("small", "large"):
            packed = bundles[name]
            compressed = packed.path.read_bytes()
            assert stack.valkey is not None
            bare_add, bare_read = await bare_roundtrip(stack.valkey.url, compressed, profile.rounds)
            print(f"{name}: load average before the deploy {os.getloadavg()[0]:.2f}", flush=True)
            sampler = PeakRss(pids)
            with sampler.running():
                started = time.perf_counter()
                await _call(client, "POST", f"/bots/{bot_id}/model", 202, json={"model_id": ids[name]}, headers=headers)
                body = await wait_loaded(client, headers, bot_id, ids[name], DEPLOY_TIMEOUT, 0.05)
                ours = time.perf_counter() - started
            deployment = body["history"][0]
            rows.append(
                {
                    "bundle": name,
                    "pairs": len(packed.manifest.pairs),
                    "size_mb": packed.size / 1e6,
                    "compressed_mb": packed.compressed_size / 1e6,
                    "bare_xadd_ms": bare_add * 1000,
                    "bare_xread_ms": bare_read * 1000,
                    "ours_s": ours,
                    "bot_swap_s": deployment["load_seconds"],
                    "transfer": deployment["transfer"],
                    "gateway_base_mib": sampler.base_mib("gateway"),
                    "gateway_peak_growth_mib": sampler.growth_mib("gateway"),
                    "management_peak_growth_mib": sampler.growth_mib("management"),
                }
            )
            print(f"{name}: {rows[-1]}", flush=True)
        await _call(client, "POST", f"/bots/{bot_id}/stop", 200, headers=headers)
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'bundle':<7}{'pairs':>6}{'size MB':>9}{'zstd MB':>9}{'bare XADD+XREAD':>17}{'ours':>9}{'ratio':>8}"
        f"{'to installed':>14}{'bot swap':>10}{'gateway RSS peak':>18}{'management RSS peak':>21}"
    )
    for r in rows:
        bare = (r["bare_xadd_ms"] + r["bare_xread_ms"]) / 1000
        installed = r["ours_s"] - r["bot_swap_s"]
        print(
            f"{r['bundle']:<7}{r['pairs']:>6}{r['size_mb']:>9.1f}{r['compressed_mb']:>9.1f}"
            f"{bare * 1000:>14.0f} ms{r['ours_s']:>7.2f} s{r['ours_s'] / bare:>7.0f}x{installed:>12.2f} s"
            f"{r['bot_swap_s']:>8.2f} s{r['gateway_peak_growth_mib']:>+13.1f} MiB"
            f"{r['management_peak_growth_mib']:>+16.1f} MiB"
        )
    base = rows[0]["gateway_base_mib"] if rows else 0
    print(
        "(bare: XADD of the compressed bundle as one entry plus its XREAD, median; ours: POST .../model until the "
        "bot reports it loaded; to installed: ours less the bot's part, i.e. decrypt, sign, chunks, outbox, "
        "receive, verify, unpack, install; bot swap: the gateway's install to the bot's first prediction with it, "
        "which waits for the bot's next round (Freqtrade's 5 s throttle); RSS peak: above the process's RSS just "
        f"before, the gateway's being {base:.0f} MiB)"
    )


async def main_async(quick: bool) -> None:
    profile = QUICK if quick else FULL
    print("load average at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    root = Path(tempfile.mkdtemp(prefix="freqfleet-bench-models-"))
    stack = Stack(root)
    try:
        await asyncio.to_thread(stack.start_servers)
        started = time.monotonic()
        result = await asyncio.to_thread(train, profile, root / "training", stack.urls["simulator"])
        print(
            f"trained {len(profile.pairs)} pairs x {profile.days} days ({len(next(iter(result.features.values())))} "
            f"features) in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        bundles = {
            name: pack(result, pairs, root / "bundles" / f"{name}.tar.zst") for name, pairs in profile.bundles.items()
        }
        for name, packed in bundles.items():
            print(
                f"bundle {name}: {len(packed.manifest.pairs)} pairs, {packed.size / 1e6:.1f} MB, "
                f"{packed.compressed_size / 1e6:.1f} MB zstd",
                flush=True,
            )
        shutil.rmtree(root / "training", ignore_errors=True)
        await asyncio.to_thread(stack.start_services)
        rows = await measure(stack, profile, bundles)
        report(rows)
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool) -> None:
    asyncio.run(main_async(quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)
