"""Roles, ownership, personal access tokens, JWKS and key rotation, the audit log."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from management_server.users.models import Role
from shared.auth import InvalidToken, JwksKeySource, RevocationStore, TokenVerifier
from tests.management_server.conftest import PASSWORD, Management, bearer


async def test_a_user_reaches_neither_admin_routes_nor_others_tokens(management: Management) -> None:
    await management.create_user("mallory@example.com")
    alice = await management.create_user("alice@example.com")
    mallory = await management.login("mallory@example.com")
    alice_tokens = await management.login("alice@example.com")
    pat = await management.client.post(
        "/api/v1/users/me/tokens",
        json={"name": "bot", "scopes": ["read"]},
        headers=bearer(alice_tokens["access_token"]),
    )
    headers = bearer(mallory["access_token"])
    for method, path in [
        ("GET", "/api/v1/users"),
        ("GET", f"/api/v1/users/{alice.id}"),
        ("PATCH", f"/api/v1/users/{alice.id}"),
        ("POST", "/api/v1/users"),
        ("GET", "/api/v1/audit"),
    ]:
        response = await management.client.request(method, path, headers=headers, json={})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {"detail": "Only an admin may do this."}
    # Another user's token: as if it did not exist.
    other = await management.client.delete(f"/api/v1/users/me/tokens/{pat.json()['id']}", headers=headers)
    missing = await management.client.delete(f"/api/v1/users/me/tokens/{uuid.uuid4()}", headers=headers)
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json()
    denied = await management.audit("authz.denied")
    assert len(denied) == 5
    assert {r.actor for r in denied} == {"mallory@example.com"}


async def test_admin_manages_users(management: Management) -> None:
    await management.create_user("root@example.com", role=Role.admin)
    admin = bearer((await management.login("root@example.com"))["access_token"])
    created = await management.client.post(
        "/api/v1/users", json={"email": "svc@example.com", "password": PASSWORD, "role": "service"}, headers=admin
    )
    assert created.status_code == 201
    user_id = created.json()["id"]
    page = await management.client.get("/api/v1/users?role=service", headers=admin)
    assert [u["email"] for u in page.json()["items"]] == ["svc@example.com"]
    assert page.json()["total"] == 1
    changed = await management.client.patch(f"/api/v1/users/{user_id}", json={"role": "user"}, headers=admin)
    assert changed.json()["role"] == "user"
    me = (await management.client.get("/api/v1/users/me", headers=admin)).json()
    selfish = await management.client.patch(f"/api/v1/users/{me['id']}", json={"is_active": False}, headers=admin)
    assert selfish.status_code == 409
    actions = [(r.action, r.target_id) for r in await management.audit() if r.action.startswith("user.")]
    assert actions == [("user.create", user_id), ("user.update", user_id)]


async def test_personal_access_tokens_are_scoped_shown_once_and_revocable(management: Management) -> None:
    await management.create_user("agent-owner@example.com")
    session = bearer((await management.login("agent-owner@example.com"))["access_token"])
    too_much = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "x", "scopes": ["admin"]}, headers=session
    )
    assert too_much.status_code == 403
    too_long = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "x", "scopes": ["read"], "expires_in_days": 400}, headers=session
    )
    assert too_long.status_code == 400  # not silently cut to the server's longest
    assert too_long.json()["detail"] == (
        "expires_in_days may be at most 365 on this server (FREQFLEET_PAT_MAX_DAYS): ask for fewer."
    )
    created = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "claude", "scopes": ["read"], "expires_in_days": 30}, headers=session
    )
    assert created.status_code == 201
    body = created.json()
    token = body["token"]
    assert body["scopes"] == ["read"]
    listed = await management.client.get("/api/v1/users/me/tokens", headers=session)
    assert [t["name"] for t in listed.json()] == ["claude"]
    assert token not in listed.text  # shown once, never again
    async with management.app.state.sessionmaker() as db:
        stored = (await db.execute(text("SELECT token_hash FROM personal_access_tokens"))).scalar_one()
    assert token not in stored
    assert len(stored) == 64

    me = await management.client.get("/api/v1/users/me", headers=bearer(token))
    assert me.status_code == 200
    mint = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "y", "scopes": ["read"]}, headers=bearer(token)
    )
    assert mint.status_code == 403

    revoked = await management.client.delete(f"/api/v1/users/me/tokens/{body['id']}", headers=session)
    assert revoked.status_code == 204
    after = await management.client.get("/api/v1/users/me", headers=bearer(token))
    assert after.status_code == 401
    actions = [r.action for r in await management.audit() if r.action.startswith("token.")]
    assert actions == ["token.create", "token.revoke"]


async def test_the_gateway_side_verifier_uses_the_published_keys(management: Management) -> None:
    await management.create_user("gw-user@example.com")
    tokens = await management.login("gw-user@example.com")
    jwks = (await management.client.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [management.app.state.keys.active.kid]
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    verifier = TokenVerifier(
        JwksKeySource(f"{management.url}/.well-known/jwks.json"),
        issuer=management.settings.jwt_issuer,
        audience=management.settings.jwt_audience,
        revocations=RevocationStore(management.app.state.redis),
    )
    claims = await verifier.verify(tokens["access_token"])
    assert claims.role == "user"
    await management.client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    with pytest.raises(InvalidToken, match="invalidated"):
        await verifier.verify(tokens["access_token"])  # logout reached the gateway's view at once


async def test_keys_rotate_without_breaking_issued_tokens(management: Management) -> None:
    from management_server.security.keys import KeyRing, add_key
    from shared.auth import StaticKeySource

    await management.create_user("rotate@example.com")
    old_token = (await management.login("rotate@example.com"))["access_token"]
    keys_dir = management.settings.data_dir / "keys"
    add_key(keys_dir)
    rotated = KeyRing.from_directory(keys_dir)
    assert len(rotated.keys) == 2
    assert rotated.active.kid != management.app.state.keys.active.kid
    verifier = TokenVerifier(
        StaticKeySource(rotated.public_keys()),
        issuer=management.settings.jwt_issuer,
        audience=management.settings.jwt_audience,
    )
    assert (await verifier.verify(old_token)).role == "user"
    assert [k["kid"] for k in rotated.jwks()["keys"]] == [k.kid for k in reversed(rotated.keys)]


async def test_the_audit_log_is_append_only_and_searchable(management: Management) -> None:
    await management.create_user("auditor@example.com", role=Role.admin)
    admin = bearer((await management.login("auditor@example.com"))["access_token"])
    await management.client.post("/api/v1/auth/token", data={"username": "auditor@example.com", "password": "nope"})
    async with management.app.state.sessionmaker() as session:
        for statement in ("UPDATE audit_log SET outcome = 'success'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(DBAPIError, match="audit_log is append-only"):
                await session.execute(text(statement))
            await session.rollback()
    failures = await management.client.get("/api/v1/audit?action=auth.login&outcome=failure", headers=admin)
    assert failures.status_code == 200
    [entry] = failures.json()["items"]
    assert entry["actor"] == "auditor@example.com"
    assert entry["reason"] == "wrong password"
    assert entry["ip"] == "127.0.0.1"
    assert entry["correlation_id"]
    first_page = await management.client.get("/api/v1/audit?limit=1", headers=admin)
    next_id = first_page.json()["next_before_id"]
    second_page = await management.client.get(f"/api/v1/audit?limit=1&before_id={next_id}", headers=admin)
    assert second_page.json()["items"][0]["id"] < next_id
    naive = await management.client.get("/api/v1/audit?since=2026-01-01T00:00:00", headers=admin)
    assert naive.status_code == 422  # a time without a zone is refused, not guessed


async def test_no_password_or_token_reaches_the_audit_log_or_the_logs(
    management: Management, capfd: pytest.CaptureFixture[str]
) -> None:
    await management.create_user("secretive@example.com")
    tokens = await management.login("secretive@example.com")
    await management.client.post("/api/v1/auth/token", data={"username": "secretive@example.com", "password": "x" * 20})
    refreshed = (
        await management.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    ).json()
    pat = (
        await management.client.post(
            "/api/v1/users/me/tokens", json={"name": "n", "scopes": ["read"]}, headers=bearer(refreshed["access_token"])
        )
    ).json()
    await management.client.post("/api/v1/auth/logout", headers=bearer(refreshed["access_token"]))
    await management.client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
    secrets = [
        PASSWORD,
        "x" * 20,
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        pat["token"],
    ]
    rows = await management.audit()
    assert len(rows) >= 6
    dumped = "\n".join(repr((r.actor, r.action, r.reason, r.details, r.target_id)) for r in rows)
    logs = capfd.readouterr()
    for secret in secrets:
        assert secret not in dumped
        assert secret not in logs.out + logs.err
