"""Token revocations live in Redis for every process that checks tokens (the gateways too). Redis losing its data
while the management server runs (here a FLUSHALL) must not make a revoked personal access token work again: the
management server notices and writes them back from the database within seconds."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.auth.revocation import PREFIX
from tests.helpers import async_wait_for
from tests.management_server.conftest import Management, bearer


async def test_revocations_redis_lost_are_written_back_from_the_database(
    management: Management, redis_url: str
) -> None:
    await management.create_user("keeper@example.com")
    tokens = await management.login("keeper@example.com")
    headers = bearer(tokens["access_token"])
    pat = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "agent", "scopes": ["read"]}, headers=headers
    )
    assert pat.status_code == 201, pat.text
    revoked = await management.client.delete(f"/api/v1/users/me/tokens/{pat.json()['id']}", headers=headers)
    assert revoked.status_code == 204
    mark = f"{PREFIX}:revoked:{pat.json()['id']}"
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert await redis.exists(mark)
        await redis.flushall()  # Redis loses everything: the revocation with the rest

        async def back() -> bool:
            return bool(await redis.exists(mark))

        await async_wait_for(back, timeout=20, interval=0.2, what="the revocation written back")
        assert management.app.state.revocation_keeper.rewrites >= 1
    finally:
        await redis.aclose()
