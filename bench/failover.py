"""Failover: the time from a host's loss to every one of its bots trading again elsewhere, and what leases cost.

``python -m bench.failover [--bots 5 20]`` (``python -m bench.run failover``: 5, then 20 bots; ``--quick``: 5). For
each size it starts ``freqfleet up`` with ``FREQFLEET_GATEWAYS=3`` (three gateways on this machine, leases of 20 s,
bots' trades in PostgreSQL) in a temporary data dir, creates N dry-run bots of the example strategy and starts them
all; placement spreads them over the three gateways. Then it loses the gateway that runs the most of them, as a host is
lost: ``up``'s supervisor is frozen first (SIGSTOP: it would start the dead gateway again, as a host that comes back
would), then that gateway's process, its relay, its launcher and every bot process of it are killed with SIGKILL. It
measures, from that moment, until each of those bots reads ``running`` on another gateway (the management server's
``GET /bots``): the median and the last, against the lease (the least the management server can wait before it may
act) and against the same bots' first start (what a start costs on this machine).

Lease renewal cost: :func:`shared.bus.leases.renew` for 1, 20, 100 and 1,000 bots on an embedded Valkey, per call
and per bot, against the same server's ``PING`` round trip (the baseline: one round trip of nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil

from bench._common import BenchError, free_port, loop_factory, percentile
from bench.fleet_run import Plan, Up, admin_client, all_bots, create_fleet, start_fleet
from freqfleet.embedded import EmbeddedValkey
from freqfleet.stack import UP_LEASE_SECONDS
from shared.bus.leases import renew
from shared.redis import create_redis
from trading_gateway.bots.adoption import find_orphans

FULL_SIZES = (5, 20)
QUICK_SIZES = (5,)
MOVE_TIMEOUT = 300.0
RENEWAL_SIZES = (1, 20, 100, 1000)
RENEWAL_ROUNDS = 200


def _gateway_process(up: Up, gateway_id: str) -> psutil.Process:
    assert up.proc is not None
    for proc in psutil.Process(up.proc.pid).children():
        with contextlib.suppress(psutil.Error):
            if proc.cmdline()[-1:] == ["gateway"] and proc.environ().get("FREQFLEET_GATEWAY_ID") == gateway_id:
                return proc
    raise BenchError(f"no process of gateway {gateway_id} under up")


def _lose_host(up: Up, gateway_id: str) -> int:
    """Freeze ``up`` (no restart), kill the gateway and everything of it; how many bot processes were killed."""
    assert up.proc is not None
    os.kill(up.proc.pid, signal.SIGSTOP)
    gateway = _gateway_process(up, gateway_id)
    family = [gateway, *gateway.children(recursive=True)]
    bots = find_orphans(up.data_dir / "gateway" / gateway_id / "bots")
    for proc in family:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for bot in bots:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bot.pid, signal.SIGKILL)
    return len(bots)


async def one_size(bots: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="freqfleet-bench-failover-") as tmp:
        root = Path(tmp)
        up = Up.start(root, bots, extra={"FREQFLEET_GATEWAYS": "3"})
        try:
            await up.wait_ready()
            client = await admin_client(up)
            await asyncio.sleep(3)  # every gateway's first heartbeat: placement sees all three
            ids = await create_fleet(client, Plan(bots=bots, minutes=0, pairs=2))
            _, started = await start_fleet(client, ids)
            placed = Counter(b["gateway_id"] for b in await all_bots(client, bots))
            lost, count = placed.most_common(1)[0]
            moving = {b["id"] for b in await all_bots(client, bots) if b["gateway_id"] == lost}
            killed = _lose_host(up, lost)
            t0 = time.perf_counter()
            back: dict[str, float] = {}
            deadline = time.monotonic() + MOVE_TIMEOUT
            while len(back) < len(moving):
                for bot in await all_bots(client, bots):
                    elsewhere = bot["gateway_id"] != lost and bot["actual_state"] == "running"
                    if bot["id"] in moving and bot["id"] not in back and elsewhere:
                        back[bot["id"]] = time.perf_counter() - t0
                if time.monotonic() > deadline:
                    raise BenchError(f"after {MOVE_TIMEOUT:g} s only {len(back)} of {len(moving)} bots run elsewhere")
                await asyncio.sleep(0.25)
            await client.aclose()
            times = sorted(back.values())
            return {
                "bots": bots,
                "on_lost_gateway": count,
                "killed_processes": killed,
                "median": statistics.median(times),
                "last": times[-1],
                "first_start_all": started,
                "placement": float(len(placed)),
            }
        finally:
            if up.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(up.proc.pid, signal.SIGCONT)
            up.stop()


async def renewal_cost(workdir: Path) -> list[tuple[int, float, float]]:
    """(bots, seconds per renewal median, seconds per PING median), on one embedded Valkey."""
    valkey = EmbeddedValkey(workdir, free_port())
    valkey.start()
    redis = create_redis(valkey.url)
    try:
        rows = []
        for size in RENEWAL_SIZES:
            held = {str(uuid.uuid4()): 1 for _ in range(size)}
            renewals, pings = [], []
            for _ in range(RENEWAL_ROUNDS):
                t = time.perf_counter()
                await renew(redis, "gw-bench", held, 20_000)
                renewals.append(time.perf_counter() - t)
                t = time.perf_counter()
                await redis.ping()
                pings.append(time.perf_counter() - t)
            rows.append((size, percentile(sorted(renewals), 50), percentile(sorted(pings), 50)))
        return rows
    finally:
        await redis.aclose()
        valkey.stop()


def report_move(result: dict[str, float]) -> None:
    print(
        f"{int(result['bots'])} bots on 3 gateways; the lost one ran {int(result['on_lost_gateway'])} "
        f"({int(result['killed_processes'])} bot processes killed with it)"
    )
    print(
        f"  host lost -> its bots running elsewhere: median {result['median']:.1f} s, last {result['last']:.1f} s "
        f"(lease {UP_LEASE_SECONDS} s: {result['last'] / UP_LEASE_SECONDS:.2f}x; the fleet's first start took "
        f"{result['first_start_all']:.1f} s)"
    )


def run(quick: bool, sizes: tuple[int, ...] | None = None) -> None:
    for bots in sizes or (QUICK_SIZES if quick else FULL_SIZES):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            report_move(runner.run(one_size(bots)))
    with (
        tempfile.TemporaryDirectory(prefix="freqfleet-bench-leases-") as tmp,
        asyncio.Runner(loop_factory=loop_factory()) as runner,
    ):
        rows = runner.run(renewal_cost(Path(tmp)))
    print("lease renewal (one script for all of a gateway's bots), median of", RENEWAL_ROUNDS)
    for size, renewal, ping in rows:
        print(
            f"  {size:>5} bots: {renewal * 1e3:7.3f} ms a renewal, {renewal / size * 1e6:7.1f} us a bot; "
            f"PING {ping * 1e3:.3f} ms ({renewal / ping:.1f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--bots", type=int, nargs="+", default=list(FULL_SIZES))
    args = parser.parse_args()
    run(False, tuple(args.bots))


if __name__ == "__main__":
    main()
