"""The control API under ``/_sim/``, for tests and demos, and the traffic layer it drives.

- ``POST /_sim/shock`` ``{"pair", "percent"}``: the pair's price jumps (or falls) by that much now.
- ``POST /_sim/path`` ``{"pair", "points": [{"after_seconds", "price" | "percent"}, ...]}``: from
  now the price follows straight lines through the points, then moves on from the last one.
- ``POST /_sim/outage`` ``{"seconds", "mode": "error" | "timeout"}`` and ``DELETE /_sim/outage``:
  market endpoints answer Binance's "internal error" (HTTP 503, code -1001), or hold every request
  until the outage ends and then answer "timeout" (HTTP 504, code -1007).
- ``POST /_sim/latency`` ``{"ms", "seconds"?}`` and ``DELETE /_sim/latency``: added latency.
- ``POST /_sim/reset`` ``{"pair"?}``: overlays dropped (of one pair, or all, with outage, latency,
  statistics, and the request-weight limit's counters, bans and settings).
- ``GET|PUT /_sim/limits``, ``DELETE /_sim/limits/bans``: Binance's request-weight limit (``limits.py``).
- ``GET /_sim/stats``, ``DELETE /_sim/stats``: requests, errors and latency per endpoint.
- ``GET /_sim/health``, ``GET /_sim/state``: seed, markets, live prices, overlays, faults.

The control API itself is never slowed down nor taken down by the faults it sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange_simulator import binance
from exchange_simulator.api import ENDPOINTS, OWN_PREFIXES
from exchange_simulator.book import round_price
from exchange_simulator.limits import WeightLimits
from exchange_simulator.market import Market
from exchange_simulator.markets import MarketSpec
from shared.logging import get_logger

log = get_logger(__name__)

LATENCY_SAMPLES = 10_000  # per endpoint, the most recent
OTHER = "other"  # statistics key of paths that are no endpoint


# -- state ----------------------------------------------------------------------------------


@dataclass
class EndpointStats:
    count: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    durations_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def add(self, status: int, duration_ms: float) -> None:
        self.count += 1
        if status >= 400:
            self.errors += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.durations_ms.append(duration_ms)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.durations_ms)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

        return {
            "count": self.count,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0)},
        }


@dataclass
class Fault:
    until: float  # time.monotonic()
    started_ms: int
    detail: dict[str, Any]
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set when ended before its time

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())

    async def wait(self) -> None:
        """Until the fault's time is over or it is ended."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), self.remaining())


@dataclass
class ControlState:
    outage: Fault | None = None
    latency: Fault | None = None
    stats: dict[str, EndpointStats] = field(default_factory=dict)
    stats_since_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def active_outage(self) -> Fault | None:
        if self.outage is not None and self.outage.remaining() <= 0:
            self.outage = None
        return self.outage

    def set_outage(self, outage: Fault | None) -> None:
        if self.outage is not None:
            self.outage.ended.set()  # requests held by the old outage are answered now
        self.outage = outage

    def active_latency(self) -> Fault | None:
        if self.latency is not None and self.latency.remaining() <= 0:
            self.latency = None
        return self.latency

    def record(self, path: str, status: int, duration_ms: float) -> None:
        key = path if path in ENDPOINTS else OTHER
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = EndpointStats()
        stats.add(status, duration_ms)

    def reset_stats(self) -> None:
        self.stats = {}
        self.stats_since_ms = int(time.time() * 1000)


class TrafficMiddleware:
    """Market traffic (everything but ``/_sim``, ``/health`` and the docs): injected latency and
    outages, and the statistics of every request, as the client sees them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(OWN_PREFIXES):
            await self.app(scope, receive, send)
            return
        control: ControlState = scope["app"].state.control
        started = time.perf_counter()
        status = 500
        try:
            if (latency := control.active_latency()) is not None:
                await asyncio.sleep(latency.detail["ms"] / 1000)
            if (outage := control.active_outage()) is not None:
                if outage.detail["mode"] == "timeout":
                    await outage.wait()  # hold the request until the outage is over, then "timeout"
                    error = binance.BinanceError(
                        504,
                        -1007,
                        "Timeout waiting for response from backend server. Send status unknown; "
                        "execution status unknown.",
                    )
                else:
                    error = binance.BinanceError(
                        503, -1001, "Internal error; unable to process your request. Please try again."
                    )
                status = error.status
                await _send_json(send, error.status, binance.dumps(error.body()))
                return

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, receive, send_wrapper)
        finally:
            control.record(path, status, (time.perf_counter() - started) * 1000)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- API ------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


PairName = Annotated[str, Field(min_length=3, max_length=30, examples=["BTC/USDT"])]


class ShockIn(_Body):
    pair: PairName
    percent: float = Field(gt=-100, le=10_000, allow_inf_nan=False, description="+5 jumps 5 %, -10 falls 10 %.")


class PathPoint(_Body):
    after_seconds: float = Field(gt=0, le=7 * 86_400, allow_inf_nan=False, description="Seconds after now.")
    price: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Absolute price.")
    percent: float | None = Field(
        default=None, gt=-100, le=10_000, allow_inf_nan=False, description="Relative to the price now."
    )

    @model_validator(mode="after")
    def _one_target(self) -> PathPoint:
        if (self.price is None) == (self.percent is None):
            raise ValueError("give exactly one of price and percent")
        return self


class PathIn(_Body):
    pair: PairName
    points: list[PathPoint] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _increasing(self) -> PathIn:
        times = [p.after_seconds for p in self.points]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("after_seconds must increase from one point to the next")
        return self


class OutageIn(_Body):
    seconds: float = Field(gt=0, le=86_400, allow_inf_nan=False)
    mode: Literal["error", "timeout"] = "error"


class LatencyIn(_Body):
    ms: float = Field(ge=0, le=60_000, allow_inf_nan=False, description="Added to every market request.")
    seconds: float | None = Field(
        default=None, gt=0, le=86_400, allow_inf_nan=False, description="Default: until reset."
    )


class ResetIn(_Body):
    pair: PairName | None = None


router = APIRouter(prefix="/_sim", tags=["simulator control"])


def _market(request: Request) -> Market:
    market: Market = request.app.state.market
    return market


def _control(request: Request) -> ControlState:
    control: ControlState = request.app.state.control
    return control


def _spec(market: Market, name: str) -> MarketSpec:
    spec = market.resolve(name)
    if spec is None:
        listed = ", ".join(s.symbol for s in market.specs.values())
        raise HTTPException(404, f"unknown pair {name!r}; the simulator lists {listed}")
    return spec


def _fault_body(fault: Fault | None) -> dict[str, Any] | None:
    if fault is None:
        return None
    return {**fault.detail, "started_at": fault.started_ms, "remaining_seconds": round(fault.remaining(), 3)}


@router.get("/health", summary="The simulator answers")
async def health(request: Request) -> dict[str, Any]:
    market = _market(request)
    return {
        "status": "ok",
        "seed": market.seed,
        "pairs": [s.symbol for s in market.specs.values()],
        "server_time": int(market.clock() * 1000),
    }


@router.get("/state", summary="Live prices, overlays and faults")
async def state(request: Request) -> dict[str, Any]:
    market, control = _market(request), _control(request)
    now = market.now_ms()
    return {
        "seed": market.seed,
        "server_time": now,
        "markets": [
            {
                "pair": spec.symbol,
                "symbol": spec.id,
                "price": round_price(spec, market.last_price(mid, now)),
                "overlays": [{"kind": o.kind, "at": o.at_ms, **o.detail} for o in market.overlays[mid]],
            }
            for mid, spec in market.specs.items()
        ],
        "outage": _fault_body(control.active_outage()),
        "latency": _fault_body(control.active_latency()),
    }


@router.post("/shock", summary="The pair's price jumps or falls by `percent` now")
async def shock(body: ShockIn, request: Request) -> dict[str, Any]:
    market = _market(request)
    spec = _spec(market, body.pair)
    now = market.now_ms()
    before, after = market.shock(spec.id, body.percent, now)
    log.info("price shock", pair=spec.symbol, percent=body.percent, before=before, after=after)
    return {
        "pair": spec.symbol,
        "at": now,
        "percent": body.percent,
        "price_before": round_price(spec, before),
        "price_after": round_price(spec, after),
    }


@router.post("/path", summary="From now the pair's price follows the given points")
async def path(body: PathIn, request: Request) -> dict[str, Any]:
    market = _market(request)
    spec = _spec(market, body.pair)
    now = market.now_ms()
    start = market.last_price(spec.id, now)
    points = [
        (
            now + round(p.after_seconds * 1000),
            p.price if p.price is not None else start * (1 + (p.percent or 0.0) / 100),
        )
        for p in body.points
    ]
    if len({t for t, _ in points}) != len(points) or points[0][0] <= now:
        raise HTTPException(422, "points must be at least a millisecond apart, the first after now")
    market.path(spec.id, points, now)
    log.info("price path", pair=spec.symbol, points=len(points), start=start, end=points[-1][1])
    return {
        "pair": spec.symbol,
        "at": now,
        "start_price": round_price(spec, start),
        "points": [{"at": t, "price": round_price(spec, p)} for t, p in points],
    }


@router.post("/outage", summary="Market endpoints fail (or time out) for `seconds`")
async def start_outage(body: OutageIn, request: Request) -> dict[str, Any]:
    control = _control(request)
    control.set_outage(
        Fault(
            until=time.monotonic() + body.seconds,
            started_ms=int(time.time() * 1000),
            detail={"mode": body.mode, "seconds": body.seconds},
        )
    )
    log.warning("outage started", mode=body.mode, seconds=body.seconds)
    body_out = _fault_body(control.outage)
    assert body_out is not None
    return body_out


@router.delete("/outage", summary="End the outage now")
async def end_outage(request: Request) -> dict[str, Any]:
    control = _control(request)
    ended = control.active_outage() is not None
    control.set_outage(None)
    log.info("outage ended", was_active=ended)
    return {"ended": ended}


@router.post("/latency", summary="Add latency to every market request")
async def set_latency(body: LatencyIn, request: Request) -> dict[str, Any]:
    control = _control(request)
    seconds = body.seconds if body.seconds is not None else math.inf
    control.latency = Fault(
        until=time.monotonic() + seconds,
        started_ms=int(time.time() * 1000),
        detail={"ms": body.ms, "seconds": body.seconds},
    )
    log.info("latency set", ms=body.ms, seconds=body.seconds)
    body_out = _fault_body(control.latency)
    assert body_out is not None
    return body_out


@router.delete("/latency", summary="Remove the added latency")
async def clear_latency(request: Request) -> dict[str, Any]:
    control = _control(request)
    cleared = control.active_latency() is not None
    control.latency = None
    return {"cleared": cleared}


@router.post("/reset", summary="Back to the seeded market")
async def reset(request: Request, body: ResetIn | None = None) -> dict[str, Any]:
    market, control = _market(request), _control(request)
    if body is not None and body.pair is not None:
        spec = _spec(market, body.pair)
        market.reset(spec.id)
        log.info("simulator reset", pair=spec.symbol)
        return {"reset": [spec.symbol]}
    market.reset()
    control.set_outage(None)
    control.latency = None
    control.reset_stats()
    limits: WeightLimits = request.app.state.limits
    limits.reset()
    log.info("simulator reset", pair="all")
    return {"reset": [s.symbol for s in market.specs.values()]}


@router.get("/stats", summary="Requests, errors and latency per market endpoint")
async def stats(request: Request) -> dict[str, Any]:
    control = _control(request)
    endpoints = {k: v.summary() for k, v in sorted(control.stats.items())}
    return {
        "since": control.stats_since_ms,
        "total": sum(v["count"] for v in endpoints.values()),
        "errors": sum(v["errors"] for v in endpoints.values()),
        "endpoints": endpoints,
    }


@router.delete("/stats", summary="Start counting again")
async def clear_stats(request: Request) -> dict[str, Any]:
    _control(request).reset_stats()
    return {"cleared": True}
