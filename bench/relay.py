"""Many bots on one IP: the same fleet against the simulator with Binance's limits on, direct and through the
gateway's market-data relay, one after the other in one run.

Each way runs its own stack (Valkey, ``freqfleet simulator`` listing 10 pairs with Binance's request-weight limit of
6,000 a minute per IP, ``freqfleet gateway`` with its production defaults: status every 5 s, Freqtrade's throttle
5 s). N bots trade the 10 pairs on 1m (AlwaysEnterMarket: every pair has an open trade, so every loop prices exits
from the order book, as Freqtrade's defaults do). The first way, **direct** (``FREQFLEET_RELAY=false``), is the
baseline: every bot asks the exchange for itself. The second, **relay**, is the product's default.

Per way, from the first START_BOT to the end of the window, as the simulator counts them: the IP's weight per
minute (the highest calendar minute, and the mean of the whole minutes), its 429 and 418 answers and its market
requests; from the bus, bots that failed or were restarted; from the gateway's heartbeat, the relay's hits, misses
and coalesced requests.

    python -m bench.run relay [--quick]      (or: python -m bench.relay [--bots N] [--minutes M])
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.gateway import (
    GATEWAY_ID,
    START_TIMEOUT,
    STRATEGY_CLASS,
    STRATEGY_SOURCE,
    Events,
    Stack,
    command_publisher,
    log_entries,
    logged_errors,
)
from shared.bus.messages import BotFailed, BotSpec, BotStarted, GatewayHeartbeat, StartBot, StartBotData
from shared.bus.streams import commands_stream

PAIRS = [f"{base}/USDT" for base in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "BNB", "LTC", "DOT", "LINK")]
SAMPLE_EVERY = 5.0


@dataclass(frozen=True)
class Plan:
    bots: int
    minutes: float


FULL = Plan(bots=30, minutes=5.0)
QUICK = Plan(bots=6, minutes=1.5)


@dataclass
class Way:
    name: str
    weight_by_minute: dict[int, int] = field(default_factory=dict)
    requests_429: int = 0
    requests_418: int = 0
    market_requests: int = 0
    seconds: float = 0.0
    started: int = 0
    restarts: int = 0
    failed: int = 0
    relay: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    restart_reasons: list[str] = field(default_factory=list)


def spec(i: int) -> BotSpec:
    return BotSpec(
        name=f"relay bench bot {i}",
        strategy_class=STRATEGY_CLASS,
        strategy_source=STRATEGY_SOURCE,
        pairs=PAIRS,
        timeframe="1m",
        stake_currency="USDT",
        stake_amount=Decimal(100),
        max_open_trades=len(PAIRS),
        dry_run_wallet=Decimal(10_000),
        stoploss=-0.3,
    )


async def sample(sim: httpx.AsyncClient, way: Way) -> None:
    limits = (await sim.get("/_sim/limits")).json()
    minute = int(time.time() // 60)
    for ip in limits["ips"].values():
        way.weight_by_minute[minute] = max(way.weight_by_minute.get(minute, 0), int(ip["used_weight_1m"]))
    way.requests_429, way.requests_418 = int(limits["requests_429"]), int(limits["requests_418"])
    way.market_requests = int((await sim.get("/_sim/stats")).json()["total"])


async def one_way(name: str, plan: Plan) -> Way:
    way = Way(name)
    root = Path(tempfile.mkdtemp(prefix=f"bench-relay-{name}-"))
    stack = Stack(root)
    try:
        stack.start(
            plan.bots,
            gateway_env={"FREQFLEET_RELAY": "true" if name == "relay" else "false"},
            simulator_env={"FREQFLEET_SIMULATOR_PAIRS": ",".join(PAIRS)},
        )
        redis = aioredis.Redis.from_url(stack.redis_url)
        async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=10) as sim:
            try:
                events, publisher = Events(redis), command_publisher(redis)
                ids = [uuid.uuid4() for _ in range(plan.bots)]
                t0 = time.monotonic()
                for i, bot_id in enumerate(ids):
                    command = StartBot(
                        source="management", data=StartBotData(bot_id=bot_id, generation=1, spec=spec(i))
                    )
                    await publisher.publish(commands_stream(GATEWAY_ID), command)
                started = asyncio.create_task(
                    events.wait_all(BotStarted, set(ids), START_TIMEOUT, key=lambda e: e.data.bot_id)
                )
                end = t0 + plan.minutes * 60
                while time.monotonic() < end:
                    await sample(sim, way)
                    await events.pull()
                    await asyncio.sleep(SAMPLE_EVERY)
                await sample(sim, way)
                await events.pull()
                way.seconds = time.monotonic() - t0
                if not started.done():
                    started.cancel()
                seen = [e for _, e in events.seen]
                starts = [e for e in seen if isinstance(e, BotStarted)]
                way.started = len({e.data.bot_id for e in starts})
                way.restarts = len(starts) - way.started
                way.failed = len({e.data.bot_id for e in seen if isinstance(e, BotFailed)})
                beats = [e for e in seen if isinstance(e, GatewayHeartbeat) and e.data.relay]
                way.relay = beats[-1].data.relay if beats else None
            finally:
                await redis.aclose()
    finally:
        stack.stop()
    way.errors = logged_errors(root / "gateway.log")
    way.restart_reasons = restart_reasons(root / "gateway.log")
    shutil.rmtree(root, ignore_errors=True)
    return way


def restart_reasons(log: Path) -> list[str]:
    """Why the gateway restarted bots (its "bot crashed; restarting it" lines)."""
    return [str(e.get("reason", "")) for _, e in log_entries(log) if e.get("event") == "bot crashed; restarting it"]


def report(plan: Plan, ways: list[Way]) -> str:
    lines = [
        f"  {plan.bots} bots x {len(PAIRS)} pairs on 1m for {plan.minutes:g} min each way; Binance's limit 6,000/min",
        f"  {'way':<8}{'weight/min max':>16}{'mean':>8}{'429s':>8}{'418s':>8}{'requests':>10}{'bots up':>9}"
        f"{'restarts':>10}{'failed':>8}",
    ]
    for w in ways:
        whole = sorted(w.weight_by_minute.items())[1:-1] or sorted(w.weight_by_minute.items())  # whole minutes
        mean = sum(v for _, v in whole) / max(1, len(whole))
        lines.append(
            f"  {w.name:<8}{max(w.weight_by_minute.values(), default=0):>16,}{mean:>8,.0f}{w.requests_429:>8}"
            f"{w.requests_418:>8}{w.market_requests:>10,}{w.started:>9}{w.restarts:>10}{w.failed:>8}"
        )
    relayed = next((w for w in ways if w.name == "relay"), None)
    if relayed is not None and relayed.relay:
        sim = relayed.relay["exchanges"].get("simulator", {})
        asked = max(1, int(sim.get("requests", 0)))
        lines.append(
            f"  relay: {asked:,} bot requests -> {sim.get('upstream_requests', 0):,} upstream; hits "
            f"{sim.get('hits', 0) / asked:.0%}, coalesced {sim.get('coalesced', 0) / asked:.0%}, misses "
            f"{sim.get('misses', 0) / asked:.0%}; refused by the relay {sim.get('refused', 0)}; cache "
            f"{relayed.relay.get('cache', {}).get('bytes', 0) / 1024:.0f} KiB"
        )
    direct = next((w for w in ways if w.name == "direct"), None)
    if direct is not None and relayed is not None and relayed.market_requests:
        ratio = relayed.market_requests / max(1, direct.market_requests)
        lines.append(f"  market requests at the exchange: relay / direct = {ratio:.2f}")
    for w in ways:
        for reason in w.restart_reasons:
            lines.append(f"  {w.name}: a bot restarted: {reason[:300]}")
        if w.errors:
            lines.append(f"  {w.name}: the gateway logged {len(w.errors)} error(s): first {w.errors[0][:300]}")
    return "\n".join(lines)


def run(quick: bool = False, plan: Plan | None = None, names: tuple[str, ...] = ("direct", "relay")) -> None:
    plan = plan or (QUICK if quick else FULL)
    print(f"Market data for {plan.bots} bots on one IP: direct (baseline) against the gateway's relay", flush=True)
    ways = [asyncio.run(one_way(name, plan)) for name in names]
    print(report(plan, ways), flush=True)
    per_minute = {w.name: [v for _, v in sorted(w.weight_by_minute.items())] for w in ways}
    print(f"  weight per calendar minute: {per_minute}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bots", type=int)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--way", choices=("direct", "relay"), help="one way only (no baseline: for looking closer)")
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    plan = Plan(bots=args.bots or base.bots, minutes=args.minutes or base.minutes)
    run(plan=plan, names=(args.way,) if args.way else ("direct", "relay"))
