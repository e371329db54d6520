"""Binance's request-weight limit, as Binance documents it for its spot REST API ("LIMITS" in the spot API docs):

- every market request has a weight, by endpoint and parameters (:func:`weight`); an IP's weights are summed per
  calendar minute, and every answer carries the sum in ``X-MBX-USED-WEIGHT-1M`` (and ``X-MBX-USED-WEIGHT``);
- a request that would take the minute's sum past the limit (``REQUEST_WEIGHT``, 6,000 a minute) is answered
  ``429``, code -1003, with ``Retry-After``: the seconds until the minute ends;
- a client that keeps sending during a ``Retry-After`` (``ban_after`` requests) is banned: every request is
  answered ``418`` with ``Retry-After`` until the ban ends; bans grow for repeat offenders, from 2 minutes,
  doubling, to 3 days.

The control API: ``GET /_sim/limits`` (the settings, and per IP the minute's weight, 429s, 418s, bans),
``PUT /_sim/limits`` ``{"weight_per_minute", "ban_after", "first_ban_seconds"}`` (``0``: no limit),
``DELETE /_sim/limits/bans`` (every ban lifted, every Retry-After forgotten; the counts stay). On by default with
Binance's numbers (``FREQFLEET_SIMULATOR_WEIGHT_LIMIT``; ``0`` turns it off).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange_simulator import binance
from exchange_simulator.api import OWN_PREFIXES, PREFIX
from shared import binance_api

WEIGHT_LIMIT = binance_api.REQUEST_WEIGHT  # per minute per IP
BAN_AFTER = 10  # requests sent during a Retry-After before the IP is banned
FIRST_BAN = 120.0  # seconds; doubled for each ban after it
LONGEST_BAN = 3 * 24 * 3600.0


def weight(path: str, params: Mapping[str, str]) -> int:
    """The weight Binance charges for ``path`` with ``params`` (:func:`shared.binance_api.weight`)."""
    return binance_api.weight(path.removeprefix(f"{PREFIX}/"), params)


@dataclass
class Address:
    """What one IP has used and done."""

    minute: int = 0  # the calendar minute (epoch seconds // 60) ``used`` counts
    used: int = 0
    retry_until: float = 0.0  # epoch seconds: the end of the minute it was told to wait for
    ignored: int = 0  # requests sent during that wait
    banned_until: float = 0.0
    bans: int = 0
    requests_429: int = 0
    requests_418: int = 0

    def at(self, minute: int) -> None:
        if minute != self.minute:
            self.minute, self.used = minute, 0

    def view(self, now: float) -> dict[str, Any]:
        self.at(int(now // 60))
        return {
            "used_weight_1m": self.used,
            "requests_429": self.requests_429,
            "requests_418": self.requests_418,
            "bans": self.bans,
            "banned_until_ms": int(self.banned_until * 1000) if self.banned_until > now else None,
        }


@dataclass
class Verdict:
    status: int  # 200: go on; 429 or 418: answered here
    used: int
    retry_after: int = 0
    body: bytes = b""


class WeightLimits:
    def __init__(self, limit: int = WEIGHT_LIMIT, ban_after: int = BAN_AFTER, clock: Callable[[], float] = time.time):
        self.configured = (limit, ban_after)
        self.limit = limit
        self.ban_after = ban_after
        self.first_ban = FIRST_BAN
        self.clock = clock
        self.addresses: dict[str, Address] = {}

    def reset(self) -> None:
        """The configured limit again, and nothing counted (``POST /_sim/reset``)."""
        self.limit, self.ban_after = self.configured
        self.first_ban = FIRST_BAN
        self.addresses = {}

    def check(self, ip: str, cost: int) -> Verdict:
        """Charge ``cost`` to ``ip`` now, or say why not."""
        now = self.clock()
        address = self.addresses.setdefault(ip, Address())
        address.at(int(now // 60))
        if self.limit <= 0:
            address.used += cost
            return Verdict(200, address.used)
        if address.banned_until > now:
            address.requests_418 += 1
            return self._banned(ip, address, now)
        if address.retry_until > now:  # told to wait, and did not
            address.ignored += 1
            if address.ignored >= self.ban_after:
                address.bans += 1
                seconds = min(LONGEST_BAN, self.first_ban * 2 ** (address.bans - 1))
                address.banned_until = now + seconds
                address.retry_until, address.ignored = 0.0, 0
                address.requests_418 += 1
                return self._banned(ip, address, now)
        if address.used + cost > self.limit:
            address.requests_429 += 1
            end_of_minute = (int(now // 60) + 1) * 60
            address.retry_until = max(address.retry_until, end_of_minute)
            error = binance.BinanceError(
                429,
                -1003,
                f"Too much request weight used; current limit is {self.limit} request weight per 1 MINUTE. "
                "Please use WebSocket Streams for live updates to avoid polling the API.",
            )
            return Verdict(429, address.used, math.ceil(end_of_minute - now), binance.dumps(error.body()))
        address.used += cost
        return Verdict(200, address.used)

    def _banned(self, ip: str, address: Address, now: float) -> Verdict:
        until_ms = int(address.banned_until * 1000)
        error = binance.BinanceError(
            418,
            -1003,
            f"Way too much request weight used; IP banned until {until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans.",
        )
        return Verdict(418, address.used, math.ceil(address.banned_until - now), binance.dumps(error.body()))

    def lift_bans(self) -> int:
        lifted = 0
        for address in self.addresses.values():
            lifted += address.banned_until > self.clock()
            address.banned_until, address.retry_until, address.ignored = 0.0, 0.0, 0
        return lifted

    def view(self) -> dict[str, Any]:
        now = self.clock()
        ips = {ip: a.view(now) for ip, a in sorted(self.addresses.items())}
        return {
            "weight_per_minute": self.limit,
            "ban_after": self.ban_after,
            "first_ban_seconds": self.first_ban,
            "ips": ips,
            "requests_429": sum(a["requests_429"] for a in ips.values()),
            "requests_418": sum(a["requests_418"] for a in ips.values()),
        }


class WeightLimitMiddleware:
    """Charges every market request (not ``/_sim``, health or docs) to its client's IP, refuses what Binance would,
    and says the minute's weight on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(OWN_PREFIXES):
            await self.app(scope, receive, send)
            return
        limits: WeightLimits = scope["app"].state.limits
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        verdict = limits.check(ip, weight(path, query))
        used = str(verdict.used).encode()
        headers = [(b"x-mbx-used-weight", used), (b"x-mbx-used-weight-1m", used)]
        if verdict.status != 200:
            headers += [
                (b"retry-after", str(verdict.retry_after).encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(verdict.body)).encode()),
            ]
            await send({"type": "http.response.start", "status": verdict.status, "headers": headers})
            await send({"type": "http.response.body", "body": verdict.body})
            return

        async def with_weight(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, with_weight)


# -- control API ----------------------------------------------------------------------------------------------------

router = APIRouter(prefix="/_sim", tags=["control"])


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_per_minute: int = Field(ge=0, le=10_000_000, description="Request weight per minute per IP (0: no limit).")
    ban_after: int | None = Field(
        default=None, ge=1, le=10_000, description="Requests sent during a Retry-After before a ban."
    )
    first_ban_seconds: float | None = Field(
        default=None,
        gt=0,
        le=LONGEST_BAN,
        description="How long a first ban lasts (Binance: 2 minutes); doubled after.",
    )


def _limits(request: Request) -> WeightLimits:
    limits: WeightLimits = request.app.state.limits
    return limits


@router.get("/limits", summary="The request-weight limit, and per IP its weight this minute, 429s, 418s, bans")
async def get_limits(request: Request) -> dict[str, Any]:
    return _limits(request).view()


@router.put("/limits", summary="Set the request-weight limit (0: none) and how many ignored waits make a ban")
async def set_limits(body: LimitsIn, request: Request) -> dict[str, Any]:
    limits = _limits(request)
    limits.limit = body.weight_per_minute
    if body.ban_after is not None:
        limits.ban_after = body.ban_after
    if body.first_ban_seconds is not None:
        limits.first_ban = body.first_ban_seconds
    return limits.view()


@router.delete("/limits/bans", summary="Lift every ban and forget every Retry-After (the counts stay)")
async def lift_bans(request: Request) -> dict[str, Any]:
    return {"lifted": _limits(request).lift_bans(), **_limits(request).view()}
