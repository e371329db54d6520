"""Enrolled gateways: only what an enrolled gateway signed is applied; revoking one orphans its bots; a live bot's
credentials go only to an enrolled gateway, sealed to its key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import select, text

from management_server.gateways.models import Gateway
from management_server.users.models import Role
from shared.bus.messages import BotStarted, BotStartedData, GatewayHeartbeat, GatewayHeartbeatData, StartBot, decode
from shared.bus.publisher import Publisher
from shared.bus.streams import EVENTS_STREAM, commands_stream, dead_letter_stream
from shared.sealing import SealError, open_credentials
from tests.enrollment import identity_for, publisher_for
from tests.helpers import async_wait_for
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.conftest import Management


def beat(gateway_id: str, api_url: str, *, source: str | None = None) -> GatewayHeartbeat:
    now = datetime.now(UTC)
    return GatewayHeartbeat(
        source=source or f"gateway:{gateway_id}",
        data=GatewayHeartbeatData(
            gateway_id=gateway_id,
            host="h",
            version="t",
            started_at=now,
            bots_running=0,
            capacity=5,
            api_url=api_url,
        ),
    )


async def gateway_row(management: Management, gateway_id: str) -> Gateway | None:
    async with management.app.state.sessionmaker() as session:
        row: Gateway | None = await session.get(Gateway, gateway_id)
        return row


async def dead_reasons(redis: aioredis.Redis) -> list[str]:
    entries: Any = await redis.xrange(dead_letter_stream(EVENTS_STREAM))
    return [f[b"reason"].decode() for _, f in entries]


async def test_only_enrolled_gateways_are_heard_and_a_revoked_one_orphans_its_bots(
    management: Management, redis_url: str
) -> None:
    admin = await session_of(management, "root@example.com", Role.admin)
    alice = await session_of(management, "alice@example.com")
    a, b = identity_for("gw-enroll-a"), identity_for("gw-enroll-b")

    # Enrolling is for admins, from the line `freqfleet gateways identity` prints; the same keys again change nothing.
    assert (
        await management.client.post("/api/v1/gateways", json={"enrollment": a.enrollment()}, headers=alice)
    ).status_code == 403
    for line, status, detail in (
        ("ssh-ed25519 AAAA", 400, "not an enrollment line"),
        (f"ffgw1:gw-enroll-a:{a.signing_public}:short", 400, "sealing key of the enrollment line"),
    ):
        refused = await management.client.post("/api/v1/gateways", json={"enrollment": line}, headers=admin)
        assert (refused.status_code, detail in refused.json()["detail"]) == (status, True), refused.text
    for identity in (a, a, b):
        enrolled = await management.client.post(
            "/api/v1/gateways", json={"enrollment": identity.enrollment()}, headers=admin
        )
        assert enrolled.status_code == 201, enrolled.text
        assert enrolled.json()["status"] == "enrolled"
    other_keys = f"ffgw1:gw-enroll-a:{b.signing_public}:{b.sealing_public}"
    taken = await management.client.post("/api/v1/gateways", json={"enrollment": other_keys}, headers=admin)
    assert taken.status_code == 409
    assert "revoke it first" in taken.json()["detail"]

    redis = aioredis.Redis.from_url(redis_url)
    try:
        # A signed heartbeat says where the gateway's API is.
        await publisher_for(redis, "gw-enroll-a").publish(EVENTS_STREAM, beat("gw-enroll-a", "http://10.0.0.1:8001"))

        async def recorded() -> bool:
            row = await gateway_row(management, "gw-enroll-a")
            return row is not None and row.api_url == "http://10.0.0.1:8001"

        await async_wait_for(recorded, timeout=15, what="the signed heartbeat applied")

        # Forgeries, written straight into Redis: refused, dead-lettered with the reason, nothing changed.
        evil = "http://attacker.example:80"
        forged_by_b = Publisher(redis, signer=b.event_signer())  # b signs as itself, says it is a
        wrong_key = Publisher(redis, signer=type(a.event_signer())(b.signing, "gw-enroll-a", a.event_signer().domain))
        unknown = identity_for("gw-never-enrolled")
        await Publisher(redis).publish(EVENTS_STREAM, beat("gw-enroll-a", evil))
        await forged_by_b.publish(EVENTS_STREAM, beat("gw-enroll-a", evil))
        await forged_by_b.publish(EVENTS_STREAM, beat("gw-enroll-b", evil, source="gateway:gw-enroll-a"))
        await wrong_key.publish(EVENTS_STREAM, beat("gw-enroll-a", evil))
        await publisher_for(redis, unknown.gateway_id).publish(EVENTS_STREAM, beat(unknown.gateway_id, evil))
        command_signer = Publisher(redis, signer=type(a.event_signer())(a.signing, "gw-enroll-a"))  # command domain
        await command_signer.publish(EVENTS_STREAM, beat("gw-enroll-a", evil))

        async def all_dead() -> list[str] | None:
            reasons = await dead_reasons(redis)
            return reasons if len(reasons) >= 6 else None

        reasons = await async_wait_for(all_dead, timeout=15, what="six forgeries dead-lettered")
        assert reasons is not None
        assert reasons[0] == "the command is not signed by the management server" or "not signed" in reasons[0]
        assert "signed an entry that says it comes from 'gateway:gw-enroll-a'" in reasons[1]
        assert "a gateway reports only for itself" in reasons[2]
        assert "does not match it" in reasons[3]
        assert "gw-never-enrolled', which is not enrolled" in reasons[4]
        assert "does not match it" in reasons[5]
        row = await gateway_row(management, "gw-enroll-a")
        assert row is not None
        assert row.api_url == "http://10.0.0.1:8001"
        assert await gateway_row(management, "gw-never-enrolled") is None

        # A bot placed on gw-enroll-a; gw-enroll-b can't report about it.
        strategy = (await upload(management, admin)).json()["id"]
        bot_id = (await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=admin)).json()["id"]
        started = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
        assert started.status_code == 200, started.text
        assert started.json()["gateway_id"] == "gw-enroll-a"
        fact = BotStartedData(
            bot_id=uuid.UUID(bot_id),
            generation=1,
            pid=1,
            port=18100,
            freqtrade_version="x",
            started_at=datetime.now(UTC),
        )
        await publisher_for(redis, "gw-enroll-b").publish(
            EVENTS_STREAM, BotStarted(source="gateway:gw-enroll-b", data=fact)
        )
        await publisher_for(redis, "gw-enroll-a").publish(
            EVENTS_STREAM, BotStarted(source="gateway:gw-enroll-a", data=fact)
        )

        async def state() -> Any:
            return (await management.client.get(f"/api/v1/bots/{bot_id}", headers=admin)).json()

        await async_wait_for(lambda: _is(state, "running"), timeout=15, what="the bot running (from its gateway)")

        # Revoked: its bots are orphaned, its reports refused, it is not live, and it is listed as revoked.
        revoked = await management.client.delete("/api/v1/gateways/gw-enroll-a", headers=admin)
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["bots_orphaned"] == 1
        assert revoked.json()["gateway"]["status"] == "revoked"
        bot = await state()
        assert bot["actual_state"] == "orphaned"
        assert "gw-enroll-a was revoked" in bot["last_error"]
        await publisher_for(redis, "gw-enroll-a").publish(EVENTS_STREAM, beat("gw-enroll-a", evil))

        async def revoked_dead() -> bool:
            return any("gw-enroll-a was revoked" in r for r in await dead_reasons(redis))

        await async_wait_for(revoked_dead, timeout=15, what="the revoked gateway's report refused")
        listed = {g["gateway_id"]: g for g in (await management.client.get("/api/v1/gateways", headers=admin)).json()}
        assert (listed["gw-enroll-a"]["status"], listed["gw-enroll-a"]["live"]) == ("revoked", False)
        assert listed["gw-enroll-a"]["api_url"] == "http://10.0.0.1:8001"
        assert (await management.client.get("/api/v1/gateways", headers=alice)).status_code == 403
        assert (await management.client.delete("/api/v1/gateways/nope", headers=admin)).status_code == 404
        actions = [(r.action, r.target_id) for r in await management.audit() if r.action.startswith("gateway.")]
        assert actions == [
            ("gateway.enroll", "gw-enroll-a"),
            ("gateway.enroll", "gw-enroll-b"),
            ("gateway.revoke", "gw-enroll-a"),
        ]
    finally:
        await redis.aclose()


async def _contents(redis: aioredis.Redis, name: bytes) -> bytes:
    """A key's value as bytes (a stream: every field of every entry)."""
    if (await redis.type(name)) == b"stream":
        entries: Any = await redis.xrange(name)
        return b"\n".join(v for _, fields in entries for v in fields.values())
    dumped: Any = await redis.dump(name)
    return bytes(dumped or b"")


async def _is(state: Any, actual: str) -> bool:
    return bool((await state())["actual_state"] == actual)


async def test_a_live_bots_credentials_go_sealed_to_its_enrolled_gateway_only(
    management: Management, redis_url: str
) -> None:
    admin = await session_of(management, "root@example.com", Role.admin)
    key, secret = f"KEYPROBE-{uuid.uuid4().hex}", f"SECRETPROBE-{uuid.uuid4().hex}"
    created = await management.client.post(
        "/api/v1/credentials",
        json={"exchange": "binance", "label": "main", "key": key, "secret": secret},
        headers=admin,
    )
    strategy = (await upload(management, admin)).json()["id"]
    body = bot_body(strategy, dry_run=False, exchange="binance", credentials_id=created.json()["id"])
    bot_id = (await management.client.post("/api/v1/bots", json=body, headers=admin)).json()["id"]
    gateway = identity_for("gw-sealed")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        # Heard of, but not enrolled: not a place for any bot, and surely not for keys.
        await Publisher(redis).publish(EVENTS_STREAM, beat("gw-sealed", "http://127.0.0.1:1"))
        nowhere = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
        assert nowhere.status_code == 503
        assert "No enrolled trading gateway" in nowhere.json()["detail"]

        await management.client.post("/api/v1/gateways", json={"enrollment": gateway.enrollment()}, headers=admin)
        await publisher_for(redis, "gw-sealed").publish(EVENTS_STREAM, beat("gw-sealed", "http://127.0.0.1:1"))

        async def started() -> Any:
            answer = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
            return answer if answer.status_code == 200 and answer.json()["notice"] is None else None

        await async_wait_for(started, timeout=15, what="the live bot started on the enrolled gateway")

        async def sent() -> Any:
            return await redis.xrange(commands_stream("gw-sealed"))

        entries = await async_wait_for(sent, timeout=15, what="START_BOT on the gateway's stream")
        raw = entries[-1][1][b"envelope"].decode()
        command = decode(raw)
        assert isinstance(command, StartBot)
        sealed = command.data.spec.credentials
        assert sealed is not None
        opened = open_credentials(gateway.sealing, sealed, "gw-sealed", uuid.UUID(bot_id))
        assert (opened.key.get_secret_value(), opened.secret.get_secret_value()) == (key, secret)
        try:
            open_credentials(identity_for("gw-enroll-b").sealing, sealed, "gw-sealed", uuid.UUID(bot_id))
            raise AssertionError("another gateway's key opened the credentials")
        except SealError:
            pass

        # The markers are nowhere in the clear: not in Redis (any key, any stream), not in the outbox table.
        names: Any = await redis.keys("*")
        for name in names:
            assert b"PROBE-" not in await _contents(redis, name), name
        async with management.app.state.sessionmaker() as session:
            envelopes = (await session.execute(text("SELECT envelope FROM outbox_messages"))).scalars().all()
            assert envelopes
            assert not [e for e in envelopes if "PROBE-" in e]
            assert (await session.execute(select(Gateway).where(Gateway.gateway_id == "gw-sealed"))).scalar_one()

        # Its gateway revoked: a start goes nowhere with the keys (no enrolled gateway is left to take the bot).
        await management.client.delete("/api/v1/gateways/gw-sealed", headers=admin)
        again = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
        assert again.status_code in (409, 503), again.text
    finally:
        await redis.aclose()
