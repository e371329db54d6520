"""Bots started three ways, side by side in one run: forked by the gateway's launcher, exec'd by the gateway, and a
bare ``freqtrade trade`` (no sandbox, no launcher: the baseline).

``python -m bench.run fleet_scale`` (or ``python -m bench.fleet_scale [--quick]``). The exchange simulator runs as a
process of its own; every bot runs ``AlwaysEnterMarket`` on one simulator pair, 1m, a 1 s throttle (it trades).

- **spawn to ready**: from the start call to the bot's ``/api/v1/ping`` answering and its ``show_config`` proving it
  is this bot (``BotProcess.wait_ready``), one bot at a time, the three ways alternated over the rounds (medians);
  then N bots started at once, each way in turn: the time until the last is ready, and the median bot's.
- **memory**: the N bots of each way, after a window of trading, read from ``/proc/<pid>/smaps_rollup``: USS (private
  clean + private dirty) and PSS per bot (medians); for the forked bots the launcher's own PSS is divided among them
  and added (the pages it holds for them are their cost too), and the launcher's RSS and PSS are shown.

The launcher is started once, before the rounds (its start, about 3 s of imports, is reported apart: the gateway
pays it once, at its first bot). Forked and exec'd bots get the sandbox the host gives (``detect``: as root an uid
per bot, Landlock, rlimits); the bare ones none.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import SimulatorServer, free_port
from bench.gateway import spec_for
from shared.sandbox.host import detect
from shared.sandbox.policy import Limits
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles, render_config
from trading_gateway.bots.launcher import Launcher
from trading_gateway.bots.process import BotProcess, bot_environment
from trading_gateway.bots.sandbox import BotSandboxing

START_TIMEOUT = 180.0
WAYS = ("fork", "exec", "bare")


@dataclass(frozen=True)
class Profile:
    rounds: int  # single-bot starts per way
    at_once: int  # N bots started together per way
    window: float  # seconds the N bots trade before their memory is read


FULL = Profile(rounds=5, at_once=10, window=20.0)
QUICK = Profile(rounds=2, at_once=4, window=5.0)


@dataclass
class Figures:
    single: list[float] = field(default_factory=list)  # seconds, spawn to ready
    all_ready: float = 0.0  # seconds until the last of N was ready
    each_ready: list[float] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)  # bytes per bot
    pss: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)


def smaps(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in bytes."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return values


class Starter:
    def __init__(self, root: Path, url: str, sandboxing: BotSandboxing, launcher: Launcher) -> None:
        self.root, self.url, self.sandboxing, self.launcher = root, url, sandboxing, launcher
        self.count = 0

    async def start(self, way: str) -> tuple[BotProcess, float]:
        self.count += 1
        spec = spec_for(self.count)
        files = BotFiles(self.root / way, str(uuid.uuid4()))
        config = render_config(
            spec,
            files,
            port=free_port(),
            credentials=ApiCredentials.generate(),
            simulator_url=self.url,
            process_throttle_secs=1,
        )
        files.write(config, spec.strategy_source)
        env = bot_environment()
        policy = None if way == "bare" else self.sandboxing.prepare(files, config, spec, env)
        t0 = time.perf_counter()
        if way == "fork":
            process = await BotProcess.fork(files, config, self.launcher, env=env, sandbox=policy)
        else:
            process = BotProcess.spawn(files, config, env=env, sandbox=policy)
        await process.wait_ready(START_TIMEOUT)
        return process, time.perf_counter() - t0


async def _stop_all(processes: list[BotProcess]) -> None:
    await asyncio.gather(*(p.stop(grace=15) for p in processes), return_exceptions=True)


async def measure(profile: Profile) -> dict[str, Figures]:
    host = detect(610_000, Limits())
    print(
        f"sandbox mode: {host.mode} (Landlock ABI {host.landlock_abi}); {profile.rounds} single starts per way, "
        f"{profile.at_once} at once, {profile.window:g} s of trading before memory is read"
    )
    figures = {way: Figures() for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="freqfleet-bench-fleet-scale-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # noqa: S103 (the bots of each way get their own folder in it)
        simulator = SimulatorServer(root)
        launcher = Launcher(root / "launcher", env=bot_environment())
        try:
            simulator.start()
            await simulator.wait_started()
            t0 = time.perf_counter()
            hello = await asyncio.to_thread(launcher.start)
            launcher_start = time.perf_counter() - t0
            print(
                f"launcher: started in {launcher_start:.2f} s (imports, gc.freeze), {hello['modules']} modules, "
                f"{hello['threads']} thread, Freqtrade {hello['freqtrade']}"
            )
            starter = Starter(root, simulator.url, BotSandboxing(host, root, simulator_url=simulator.url), launcher)
            for r in range(profile.rounds):  # one at a time, the ways alternated
                for way in WAYS[r % 3 :] + WAYS[: r % 3]:
                    process, seconds = await starter.start(way)
                    figures[way].single.append(seconds)
                    await process.stop(grace=15)
            for way in WAYS:
                t0 = time.perf_counter()
                started = await asyncio.gather(*(starter.start(way) for _ in range(profile.at_once)))
                figures[way].all_ready = time.perf_counter() - t0
                figures[way].each_ready = [seconds for _, seconds in started]
                processes = [process for process, _ in started]
                await asyncio.sleep(profile.window)
                launcher_pss = smaps(launcher.pid)["Pss"] if way == "fork" and launcher.pid else 0
                for process in processes:
                    rollup = smaps(process.pid)
                    figures[way].uss.append(rollup["Private_Clean"] + rollup["Private_Dirty"])
                    figures[way].pss.append(rollup["Pss"] + launcher_pss // len(processes))
                    figures[way].rss.append(rollup["Rss"])
                if way == "fork" and launcher.pid:
                    own = smaps(launcher.pid)
                    print(
                        f"launcher with {len(processes)} bots: RSS {own['Rss'] / 2**20:.0f} MiB, PSS "
                        f"{own['Pss'] / 2**20:.0f} MiB (divided among them in the PSS below)"
                    )
                await _stop_all(processes)
        finally:
            launcher.close(wait=10)
            simulator.stop()
    return figures


def report(figures: dict[str, Figures], profile: Profile) -> str:
    mib = 2**20

    def med(values: list[float] | list[int]) -> float:
        return statistics.median(values) if values else float("nan")

    lines = [
        f"  {'':<28} {'fork':>10} {'exec':>10} {'bare':>10}   fork/exec  fork/bare",
    ]

    def row(name: str, get: Callable[[Figures], float], unit: str, scale: float = 1.0) -> None:
        f, e, b = (get(figures[w]) / scale for w in WAYS)
        lines.append(f"  {name:<28} {f:>8.2f}{unit} {e:>8.2f}{unit} {b:>8.2f}{unit}   {f / e:>9.2f} {f / b:>10.2f}")

    row("spawn to ready, one bot", lambda x: med(x.single), " s")
    row(f"{profile.at_once} at once: last ready", lambda x: x.all_ready, " s")
    row(f"{profile.at_once} at once: median bot", lambda x: med(x.each_ready), " s")
    row("USS per bot", lambda x: med(x.uss), "Mi", mib)
    row("PSS per bot (+launcher share)", lambda x: med(x.pss), "Mi", mib)
    row("RSS per bot", lambda x: med(x.rss), "Mi", mib)
    return "\n".join(lines)


def run(quick: bool) -> None:
    profile = QUICK if quick else FULL
    figures = asyncio.run(measure(profile))
    print(report(figures, profile), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)
