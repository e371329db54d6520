"""Gateways: enrolling (an admin gives their public keys), revoking, heartbeats, and which are alive."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots import changes
from management_server.bots.models import ActualState, Bot
from management_server.errors import Refused
from management_server.gateways.models import Gateway
from shared.bus.messages import GatewayHeartbeat

# A gateway is live while its last heartbeat is younger than this (three missed beats at 5 s).
LIVE_WINDOW = timedelta(seconds=15)
ENROLLMENT_PREFIX = "ffgw1"
GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class EnrollmentRefused(Refused):
    """The enrollment can't be made; the message says why (a person can act on it)."""


def parse_enrollment(line: str) -> tuple[str, str, str]:
    """(gateway id, signing key, sealing key) from the line ``freqfleet gateways identity`` prints.

    :raises EnrollmentRefused: not such a line.
    """
    parts = line.strip().split(":")
    if len(parts) != 4 or parts[0] != ENROLLMENT_PREFIX:
        raise EnrollmentRefused(
            400, "not an enrollment line: run `freqfleet gateways identity` on the gateway's host and give its output"
        )
    _, gateway_id, signing, sealing = parts
    if not GATEWAY_ID.match(gateway_id):
        raise EnrollmentRefused(400, f"{gateway_id[:70]!r} is not a gateway id")
    for name, key in (("signing", signing), ("sealing", sealing)):
        try:
            raw = base64.b64decode(key, validate=True)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise EnrollmentRefused(400, f"the {name} key of the enrollment line is not a 32-byte Base64 key")
    return gateway_id, signing, sealing


async def enroll(session: AsyncSession, line: str, by: uuid.UUID | None) -> tuple[Gateway, bool]:
    """Record the gateway's keys; (the gateway, whether anything changed). Enrolling the same keys again is a no-op;
    other keys for an enrolled gateway are refused (revoke it first), a revoked gateway is enrolled anew."""
    gateway_id, signing, sealing = parse_enrollment(line)
    gateway = await session.get(Gateway, gateway_id, with_for_update=True)
    now = datetime.now(UTC)
    if gateway is None:
        gateway = Gateway(gateway_id=gateway_id, bots_running=0, capacity=0)
        session.add(gateway)
    elif gateway.enrolled:
        if (gateway.signing_key, gateway.sealing_key) == (signing, sealing):
            return gateway, False
        raise EnrollmentRefused(
            409,
            f"gateway {gateway_id} is enrolled with other keys: revoke it first "
            "(freqfleet gateways revoke) if this is its new identity",
        )
    gateway.signing_key, gateway.sealing_key = signing, sealing
    gateway.enrolled_at, gateway.enrolled_by, gateway.revoked_at = now, by, None
    await session.flush()
    return gateway, True


async def revoke(session: AsyncSession, gateway_id: str) -> tuple[Gateway, int]:
    """Revoke the gateway: its reports are refused from now on, nothing more is sent to it, and its bots are
    orphaned (they must be started elsewhere). (The gateway, how many bots were orphaned.)

    :raises EnrollmentRefused: no such gateway (404).
    """
    gateway = await session.get(Gateway, gateway_id, with_for_update=True)
    if gateway is None:
        raise EnrollmentRefused(404, f"there is no gateway {gateway_id[:70]!r}")
    if gateway.revoked_at is None:
        gateway.revoked_at = datetime.now(UTC)
    result = await session.execute(
        update(Bot)
        .where(Bot.gateway_id == gateway_id, Bot.actual_state != ActualState.orphaned.value)
        .values(
            actual_state=ActualState.orphaned.value,
            last_error=f"its gateway {gateway_id} was revoked: start the bot again to run it on an enrolled gateway",
        )
        .returning(Bot.id, Bot.owner_id)
    )
    orphaned = {bot_id: owner_id for bot_id, owner_id in result.all()}
    changes.note(session, orphaned)  # the dashboard's pages show them orphaned
    await session.flush()
    return gateway, len(orphaned)


async def list_gateways(session: AsyncSession) -> list[Gateway]:
    return list((await session.execute(select(Gateway).order_by(Gateway.gateway_id))).scalars())


LOAD_FIELDS = ("cpu_percent", "cpu_count", "memory_percent", "memory_used_bytes", "memory_total_bytes", "bots_by_state")


async def record_heartbeat(session: AsyncSession, beat: GatewayHeartbeat) -> None:
    """Update the enrolled gateway from its (signed) heartbeat; an older beat (out of order) changes nothing."""
    data = beat.data
    values: dict[str, Any] = {
        "host": data.host,
        "version": data.version,
        "started_at": data.started_at,
        "last_seen_at": beat.occurred_at,
        "bots_running": data.bots_running,
        "capacity": data.capacity,
        "api_url": data.api_url,
        "load": {name: value for name in LOAD_FIELDS if (value := getattr(data, name)) is not None} or None,
    }
    if data.relay is not None:  # its market-data relay: the host IP's request weight, what the cache saves
        values["load"] = (values["load"] or {}) | {"relay": data.relay}
    if data.inventory is not None:
        values["inventory"] = [entry.model_dump(mode="json") for entry in data.inventory]
        values["inventory_at"] = beat.occurred_at
    await session.execute(
        update(Gateway)
        .where(
            Gateway.gateway_id == data.gateway_id,
            Gateway.signing_key.is_not(None),
            Gateway.revoked_at.is_(None),
            (Gateway.last_seen_at.is_(None)) | (Gateway.last_seen_at < beat.occurred_at),
        )
        .values(**values)
    )


def _live(now: datetime) -> list[ColumnElement[bool]]:
    return [Gateway.last_seen_at >= now - LIVE_WINDOW, Gateway.signing_key.is_not(None), Gateway.revoked_at.is_(None)]


# Built once (a control action asks it every time, with its write: ``bots.lifecycle``); parameters
# ``live_gateway_id`` and ``live_since`` (now - LIVE_WINDOW).
IS_LIVE = select(
    exists().where(
        Gateway.gateway_id == bindparam("live_gateway_id"),
        Gateway.last_seen_at >= bindparam("live_since"),
        Gateway.signing_key.is_not(None),
        Gateway.revoked_at.is_(None),
    )
)


async def is_live(session: AsyncSession, gateway_id: str) -> bool:
    """Whether this enrolled gateway was heard from recently (one small query: no gateway row loaded)."""
    since = datetime.now(UTC) - LIVE_WINDOW
    return bool(await session.scalar(IS_LIVE, {"live_gateway_id": gateway_id, "live_since": since}))


@dataclass(frozen=True)
class Room:
    """A live gateway that takes bots, and how many more it takes now."""

    gateway_id: str
    capacity: int  # its last heartbeat's free capacity, less the starts placed on it since (may be 0 or less)


# Starts placed on a gateway after its last heartbeat, which its capacity does not count yet: a burst of starts (a
# failover of many bots) is spread by them instead of all going to the gateway that had the most room 5 s ago.
_PLACED_SINCE_HEARTBEAT = (
    select(func.count())
    .select_from(Bot)
    .where(
        Bot.gateway_id == Gateway.gateway_id,
        Bot.actual_state == ActualState.starting.value,
        Bot.commanded_at > Gateway.last_seen_at,
    )
    .correlate(Gateway)
    .scalar_subquery()
)


async def live_gateways(session: AsyncSession, now: datetime | None = None) -> list[Room]:
    """Enrolled gateways heard from recently that take bots (not being drained), the least loaded (most free
    capacity, less the starts placed since its heartbeat) first: where a bot may be placed."""
    now = now or datetime.now(UTC)
    free = (Gateway.capacity - _PLACED_SINCE_HEARTBEAT).label("free")
    result = await session.execute(
        select(Gateway.gateway_id, free)
        .where(*_live(now), Gateway.drain_requested_at.is_(None))
        .order_by(free.desc(), Gateway.bots_running, Gateway.gateway_id)
    )
    return [Room(gateway_id, int(capacity)) for gateway_id, capacity in result.all()]


async def set_draining(session: AsyncSession, gateway_id: str, draining: bool) -> Gateway:
    """Drain the enrolled gateway (it takes no new bot; bots/drain.py moves its bots off), or end its drain."""
    gateway = await session.get(Gateway, gateway_id, with_for_update=True)
    if gateway is None or not gateway.enrolled:
        raise EnrollmentRefused(404, f"No enrolled gateway {gateway_id}.")
    gateway.drain_requested_at = (gateway.drain_requested_at or datetime.now(UTC)) if draining else None
    return gateway
