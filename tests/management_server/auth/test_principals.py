"""management_server/auth/principals.py: what authentication read of a user is remembered, and yet a token revoked
or invalidated by another management server is refused at once, and a new token after a change of role sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from management_server.main import create_app
from management_server.users.models import Role
from tests.helpers import serve
from tests.management_server.conftest import Management, bearer


@pytest_asyncio.fixture(loop_scope="session")
async def other(management: Management) -> AsyncIterator[httpx.AsyncClient]:
    """A second management server process on the same database and Redis (as with FREQFLEET_MANAGEMENT_WORKERS)."""
    async with serve(create_app(management.settings)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def test_a_token_revoked_elsewhere_is_refused_here_at_once(
    management: Management, other: httpx.AsyncClient
) -> None:
    await management.create_user("alice@example.com")
    admin_user = await management.create_user("root@example.com", role=Role.admin)
    here = management.client
    login = await management.login("alice@example.com")
    alice = bearer(login["access_token"])
    made = await here.post("/api/v1/users/me/tokens", json={"name": "agent", "scopes": ["read"]}, headers=alice)
    pat = bearer(made.json()["token"])
    for headers in (alice, pat, alice, pat):  # read once, then remembered here
        assert (await here.get("/api/v1/users/me", headers=headers)).status_code == 200
    alice_id = (await here.get("/api/v1/users/me", headers=alice)).json()["id"]

    # The personal token is revoked on the other server: refused here on the next request.
    revoked = await other.delete(f"/api/v1/users/me/tokens/{made.json()['id']}", headers=alice)
    assert revoked.status_code == 204
    assert (await here.get("/api/v1/users/me", headers=pat)).status_code == 401
    # Alice logs out there: her access token is refused here on the next request.
    assert (await other.post("/api/v1/auth/logout", headers=alice)).status_code == 204
    assert (await here.get("/api/v1/users/me", headers=alice)).status_code == 401

    # Made an admin there, she logs in again: her new token is read afresh here, with the new role.
    before = bearer((await management.login("alice@example.com"))["access_token"])
    assert (await here.get("/api/v1/users/me", headers=before)).json()["role"] == "user"  # remembered as a user
    admin = bearer((await management.login(admin_user.email))["access_token"])
    promoted = await other.patch(f"/api/v1/users/{alice_id}", json={"role": "admin"}, headers=admin)
    assert promoted.status_code == 200, promoted.text
    assert (await here.get("/api/v1/users/me", headers=before)).status_code == 401  # a role change ends her tokens
    again = bearer((await management.login("alice@example.com"))["access_token"])
    me = await here.get("/api/v1/users/me", headers=again)
    assert (me.status_code, me.json()["role"]) == (200, "admin")
    assert (await here.get("/api/v1/users", headers=again)).status_code == 200  # and may do what an admin does
