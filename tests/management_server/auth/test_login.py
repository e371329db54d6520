"""Logging in, registering, and what the database keeps of a password."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from management_server.config import ManagementSettings
from management_server.main import create_app
from management_server.users.models import User
from management_server.users.service import create_user
from tests.helpers import serve
from tests.management_server.conftest import PASSWORD, Management, bearer


async def test_the_stored_hash_is_argon2id_with_the_configured_parameters(management: Management) -> None:
    await management.create_user("hash@example.com")
    async with management.app.state.sessionmaker() as session:
        user = (await session.execute(select(User).where(User.email == "hash@example.com"))).scalar_one()
    s = management.settings
    assert user.password_hash.startswith(
        f"$argon2id$v=19$m={s.argon2_memory_cost_kib},t={s.argon2_time_cost},p={s.argon2_parallelism}$"
    )
    assert PASSWORD not in user.password_hash


async def test_unknown_email_and_wrong_password_get_the_same_answer(management: Management) -> None:
    await management.create_user("known@example.com")
    wrong = await management.client.post(
        "/api/v1/auth/token", data={"username": "known@example.com", "password": "not the password at all"}
    )
    unknown = await management.client.post(
        "/api/v1/auth/token", data={"username": "nobody@example.com", "password": "not the password at all"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Incorrect email or password."}
    assert [(r.actor, r.outcome, r.reason) for r in await management.audit("auth.login")] == [
        ("known@example.com", "failure", "wrong password"),
        ("nobody@example.com", "failure", "unknown email"),
    ]


async def test_login_rehashes_when_the_parameters_rose(management_settings: ManagementSettings) -> None:
    weak = management_settings.model_copy(update={"argon2_memory_cost_kib": 19456, "argon2_time_cost": 2})
    strong = management_settings.model_copy(update={"argon2_time_cost": 3})
    app = create_app(weak)
    async with serve(app), app.state.sessionmaker.begin() as session:
        await create_user(session, app.state.password_hasher, "old@example.com", PASSWORD)
    app = create_app(strong)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/v1/auth/token", data={"username": "old@example.com", "password": PASSWORD})
        assert response.status_code == 200
        async with app.state.sessionmaker() as session:
            user = (await session.execute(select(User))).scalar_one()
    assert ",t=3," in user.password_hash


async def test_registration_checks_the_password_and_the_email(management: Management) -> None:
    client = management.client
    weak = await client.post("/api/v1/auth/register", json={"email": "new@example.com", "password": "password1234"})
    assert weak.status_code == 400
    assert weak.json()["detail"] == "Password refused: the password is too common: choose one that others don't use."
    short = await client.post("/api/v1/auth/register", json={"email": "new@example.com", "password": "short"})
    assert "at least 12 characters" in short.json()["detail"]
    bad_email = await client.post("/api/v1/auth/register", json={"email": "not-an-email", "password": PASSWORD})
    assert bad_email.status_code == 422
    ok = await client.post("/api/v1/auth/register", json={"email": "New@Example.com", "password": PASSWORD})
    assert ok.status_code == 201
    assert ok.json()["email"] == "new@example.com"
    assert ok.json()["role"] == "user"
    assert "password" not in ok.text
    again = await client.post("/api/v1/auth/register", json={"email": "new@example.com", "password": PASSWORD})
    assert again.status_code == 409
    await management.login("new@example.com")


async def test_registration_can_be_closed(management_settings: ManagementSettings) -> None:
    closed = management_settings.model_copy(update={"open_registration": False})
    async with serve(create_app(closed)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/v1/auth/register", json={"email": "x@example.com", "password": PASSWORD})
    assert response.status_code == 403
    assert response.json()["detail"] == "Registration is closed: ask an admin for an account."


async def test_me_needs_a_token(management: Management) -> None:
    response = await management.client.get("/api/v1/users/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert [r.reason for r in await management.audit("authz.denied")] == ["no bearer token"]
    garbage = await management.client.get("/api/v1/users/me", headers=bearer("x.y.z"))
    assert garbage.status_code == 401


async def test_failed_logins_are_throttled_but_the_real_user_gets_in_from_elsewhere(management: Management) -> None:
    await management.create_user("target@example.com")
    limit = management.settings.login_max_failures_per_account_ip
    for _ in range(limit):
        response = await management.client.post(
            "/api/v1/auth/token", data={"username": "target@example.com", "password": "guess guess guess"}
        )
        assert response.status_code == 401
    blocked = await management.client.post(
        "/api/v1/auth/token", data={"username": "target@example.com", "password": PASSWORD}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) >= 1
    assert blocked.json()["detail"].startswith("Too many requests")
    # The real user, from another address: the attacker's failures don't lock them out.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=management.url, transport=transport) as elsewhere:
        tokens = await management.login("target@example.com", client=elsewhere)
    assert tokens["access_token"]
    logins = await management.audit("auth.login")
    assert [(r.outcome, r.reason, r.ip) for r in logins][-2:] == [
        ("denied", "throttled", "127.0.0.1"),
        ("success", None, "127.0.0.2"),
    ]


async def test_every_response_carries_the_security_headers(management: Management) -> None:
    response = await management.client.get("/api/v1/users/me")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
