"""What the sandbox costs a bot: start-to-ready time and steady CPU, sandboxed against bare, in the same run.

``python -m bench.run sandbox`` (or ``python -m bench.sandbox [--quick]``). The exchange simulator runs as
its own process. Each round starts one bare bot and one sandboxed bot (``BotProcess.spawn`` with and
without the policy the gateway gives, the order alternating between rounds), one after the other so that
neither start competes with the other, then measures both idle bots' CPU over the same window, side by
side. A bot runs ``AlwaysEnterMarket`` on one pair of the simulator with a 1 s throttle, so it trades.
The launcher alone is timed too: ``/bin/true`` through it against ``/bin/true`` directly.

The sandbox mode is the host's (``detect``): as root an uid per bot in a mount namespace, Landlock, rlimits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench._common import SimulatorServer, free_port
from bench.gateway import spec_for
from shared.sandbox.host import detect
from shared.sandbox.policy import Limits, Policy, wrap
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles, render_config
from trading_gateway.bots.process import BotProcess, bot_environment
from trading_gateway.bots.sandbox import BotSandboxing

START_TIMEOUT = 90.0


@dataclass(frozen=True)
class Profile:
    rounds: int
    window: float  # seconds of steady CPU measured per round
    launcher_runs: int


FULL = Profile(rounds=9, window=20.0, launcher_runs=30)
QUICK = Profile(rounds=2, window=8.0, launcher_runs=10)


async def _start(root: Path, sandboxing: BotSandboxing | None, port: int, url: str, i: int) -> tuple[BotProcess, float]:
    spec = spec_for(i)
    files = BotFiles(root / ("sandboxed" if sandboxing else "bare"), str(uuid.uuid4()))
    config = render_config(
        spec, files, port=port, credentials=ApiCredentials.generate(), simulator_url=url, process_throttle_secs=1
    )
    files.write(config, spec.strategy_source)
    env = bot_environment()
    policy = sandboxing.prepare(files, config, spec, env) if sandboxing else None
    process = BotProcess.spawn(files, config, env=env, sandbox=policy)
    ready = await process.wait_ready(START_TIMEOUT)
    return process, ready.seconds


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def _launcher_overhead(root: Path, runs: int) -> tuple[float, float]:
    policy = Policy(home=str(root / "launcher"), env={"PATH": "/usr/bin:/bin"})
    os.makedirs(policy.home, exist_ok=True)

    def timed(argv: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(argv, check=True)
        return time.perf_counter() - t0

    bare = [timed(["/bin/true"]) for _ in range(runs)]
    sandboxed = [timed(wrap(policy, ["/bin/true"])) for _ in range(runs)]
    return statistics.median(bare), statistics.median(sandboxed)


async def measure(profile: Profile) -> None:
    host = detect(610_000, Limits())
    print(f"sandbox mode: {host.mode} (Landlock ABI {host.landlock_abi}); {profile.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="freqfleet-bench-sandbox-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # noqa: S103 (the bots of each kind get their own folder in it)
        simulator = SimulatorServer(root)
        starts: dict[str, list[float]] = {"bare": [], "sandboxed": []}
        cpu: dict[str, list[float]] = {"bare": [], "sandboxed": []}
        try:
            simulator.start()
            await simulator.wait_started()
            url = simulator.url
            sandboxing = BotSandboxing(host, root, simulator_url=url)
            for r in range(profile.rounds):
                order = ["bare", "sandboxed"] if r % 2 == 0 else ["sandboxed", "bare"]
                running: dict[str, BotProcess] = {}
                for kind in order:
                    process, seconds = await _start(
                        root, sandboxing if kind == "sandboxed" else None, free_port(), url, r
                    )
                    running[kind] = process
                    starts[kind].append(seconds)
                await asyncio.sleep(3)  # first round of the trading loop done
                before = {k: _cpu(p.pid) for k, p in running.items()}
                await asyncio.sleep(profile.window)
                for kind, process in running.items():
                    cpu[kind].append((_cpu(process.pid) - before[kind]) / profile.window * 100)
                for process in running.values():
                    await process.stop(grace=15)
        finally:
            simulator.stop()
        bare_run, sandboxed_run = _launcher_overhead(root, profile.launcher_runs)

    def line(name: str, values: dict[str, list[float]], unit: str) -> None:
        bare, sand = statistics.median(values["bare"]), statistics.median(values["sandboxed"])
        print(
            f"{name:<24} bare {bare:8.3f} {unit}   sandboxed {sand:8.3f} {unit}   ratio {sand / bare:5.3f}  "
            f"(medians of {len(values['bare'])}; all: bare {[round(v, 3) for v in values['bare']]}, "
            f"sandboxed {[round(v, 3) for v in values['sandboxed']]})"
        )

    line("start to ready", starts, "s")
    line("steady CPU", cpu, "%")
    print(
        f"{'launcher (/bin/true)':<24} bare {bare_run * 1000:8.1f} ms  sandboxed {sandboxed_run * 1000:8.1f} ms  "
        f"(+{(sandboxed_run - bare_run) * 1000:.1f} ms per start)"
    )


def run(quick: bool) -> None:
    asyncio.run(measure(QUICK if quick else FULL))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)
