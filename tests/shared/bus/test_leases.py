"""Leases on a real Valkey, with the gateway's own ACL user: renewal, expiry on the server's clock, a bot lost to
another gateway, and what a gateway may not touch."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from freqfleet.embedded import EmbeddedValkey, restricted_user
from shared.bus.leases import Holder, holder_key, holder_of, leases_key, leases_of, renew, set_holder
from trading_gateway.redis_acl import acl_rules, acl_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_gateway_renews_what_it_holds_and_learns_what_it_lost(redis_url: str, valkey: EmbeddedValkey) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    gateway = aioredis.Redis.from_url(restricted_user(valkey.url, acl_user("gw-a"), acl_rules("gw-a")))
    mine, moved, unplaced = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await set_holder(admin, mine, "gw-a", 3)
        await set_holder(admin, moved, "gw-b", 9)  # failed over to gw-b while gw-a was away
        renewal = await renew(gateway, "gw-a", {mine: 5, moved: 7, unplaced: 1}, ttl_ms=2000)
        assert renewal.lost == {moved: Holder("gw-b", 9)}
        held = await leases_of(admin, "gw-a")
        assert set(held.held) == {mine, unplaced}  # a bot placed before leases existed is kept
        assert held.held[mine].generation == 5
        assert held.held[mine].expires_ms - held.now_ms == pytest.approx(2000, abs=200)
        assert held.alive(mine)
        assert not held.alive(moved)

        # Not renewed: expired by the server's clock, and still there to say so (the hash never expires).
        async def expired() -> bool:
            return not (await leases_of(admin, "gw-a")).alive(mine)

        deadline = asyncio.get_running_loop().time() + 5
        while not await expired():
            assert asyncio.get_running_loop().time() < deadline, "the lease never expired"
            await asyncio.sleep(0.1)
        assert mine in (await leases_of(admin, "gw-a")).held

        # A renewal rewrites the whole hash: a bot the gateway no longer runs drops out.
        await renew(gateway, "gw-a", {mine: 6}, ttl_ms=5000)
        assert set((await leases_of(admin, "gw-a")).held) == {mine}
        assert await holder_of(admin, mine) == Holder("gw-a", 3)

        # The gateway's user may not name a holder, nor touch another gateway's leases.
        with pytest.raises(NoPermissionError):
            await gateway.set(holder_key(mine), "gw-a 99")
        with pytest.raises((NoPermissionError, ResponseError)):
            await renew(gateway, "gw-b", {moved: 9}, ttl_ms=5000)
        with pytest.raises(NoPermissionError):
            await gateway.delete(leases_key("gw-b"))
    finally:
        await admin.delete(holder_key(mine), holder_key(moved), leases_key("gw-a"))
        await admin.aclose()
        await gateway.aclose()
