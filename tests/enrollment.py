"""Enrolled gateways for tests: the management server applies only what an enrolled gateway signed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.config import normalize_database_url
from management_server.gateways.service import enroll
from shared.bus.messages import Envelope
from shared.bus.publisher import Publisher
from trading_gateway.config import GatewaySettings
from trading_gateway.identity import GatewayIdentity, load_or_create


async def enroll_identity(database_url: str, identity: GatewayIdentity) -> GatewayIdentity:
    """Enroll ``identity`` in the database at ``database_url`` (as `freqfleet gateways enroll` does)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(normalize_database_url(database_url))
    try:
        async with async_sessionmaker(engine)() as session:
            await enroll(session, identity.enrollment(), None)
            await session.commit()
    finally:
        await engine.dispose()
    return identity


async def enroll_gateway(database_url: str, gateway_id: str, folder: Path) -> GatewayIdentity:
    """A gateway identity in ``folder`` (made if new), enrolled."""
    return await enroll_identity(database_url, load_or_create(folder, gateway_id))


async def enroll_settings(database_url: str, settings: GatewaySettings) -> GatewayIdentity:
    """Enroll the gateway ``settings`` describe, with the identity it will use when it starts."""
    return await enroll_gateway(database_url, settings.gateway_id, settings.gateway_data_dir)


def signed_publisher(redis: aioredis.Redis, identity: GatewayIdentity) -> Publisher:
    """Publishes events as that gateway does (signed with its identity)."""
    return Publisher(redis, signer=identity.event_signer())


_identities: dict[str, GatewayIdentity] = {}


def identity_for(gateway_id: str) -> GatewayIdentity:
    """A gateway identity kept in memory (one per id for the whole session), for tests that play a gateway."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    if gateway_id not in _identities:
        _identities[gateway_id] = GatewayIdentity(gateway_id, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
    return _identities[gateway_id]


async def ensure_enrolled(session: AsyncSession, gateway_id: str) -> GatewayIdentity:
    """Enroll the in-memory gateway ``gateway_id`` in the session's database (nothing when it is already)."""
    identity = identity_for(gateway_id)
    await enroll(session, identity.enrollment(), None)
    return identity


def publisher_for(redis: aioredis.Redis, gateway_id: str) -> Publisher:
    """Publishes events signed as the in-memory gateway ``gateway_id`` (enroll it first)."""
    return signed_publisher(redis, identity_for(gateway_id))


class GatewayEvents:
    """Publishes events as the gateways they say they come from (``source`` ``gateway:<id>``): each gateway is
    enrolled (in-memory identity) on first use, and every entry signed with its key, as a real gateway does."""

    def __init__(self, redis: aioredis.Redis, database_url: str) -> None:
        self.redis = redis
        self.database_url = database_url
        self._enrolled: set[str] = set()

    async def publish(self, stream: str, message: Envelope) -> str:
        gateway_id = message.source.removeprefix("gateway:")
        if gateway_id not in self._enrolled:
            await enroll_identity(self.database_url, identity_for(gateway_id))
            self._enrolled.add(gateway_id)
        return await publisher_for(self.redis, gateway_id).publish(stream, message)


def gateway_events(management: Any, redis: aioredis.Redis) -> GatewayEvents:
    """:class:`GatewayEvents` on the database of a test's management server (``tests.management_server``)."""
    return GatewayEvents(redis, management.settings.database_url.get_secret_value())


def enroll_with_the_cli(env: dict[str, str], cwd: Path) -> str:
    """What an operator does for a gateway started by hand: `freqfleet gateways identity` on its host (with its
    environment), then `freqfleet gateways enroll <line>` against the database; the enrollment line."""
    import subprocess
    import sys

    def freqfleet(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "freqfleet", "gateways", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()

    line = freqfleet("identity")
    assert "enrolled" in freqfleet("enroll", line)
    return line
