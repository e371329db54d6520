"""Every way a bad token can come in is refused, audited, and leaves no secret behind."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from management_server.users.models import Role
from tests.management_server.conftest import PASSWORD, Management, bearer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(management: Management, sub: uuid.UUID, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "iss": management.settings.jwt_issuer,
        "aud": management.settings.jwt_audience,
        "sub": str(sub),
        "role": "admin",
        "typ": "access",
        "scope": "read trade admin",
        "ver": 0,
        "jti": str(uuid.uuid4()),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    return values | changes


def signed(management: Management, payload: dict[str, Any]) -> str:
    key = management.app.state.keys.active
    return jwt.encode(payload, key.private, algorithm="EdDSA", headers={"kid": key.kid})


async def refused(management: Management, token: str) -> str:
    """Assert the token gets a 401 and an audit row; return the row's reason."""
    before = len(await management.audit("authz.denied"))
    response = await management.client.get("/api/v1/users/me", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Invalid or expired token: log in again."}
    rows = await management.audit("authz.denied")
    assert len(rows) == before + 1
    assert rows[-1].outcome == "denied"
    return rows[-1].reason or ""


async def test_a_good_token_works(management: Management) -> None:
    await management.create_user("alice@example.com")
    tokens = await management.login("alice@example.com")
    me = await management.client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["kid"] == management.app.state.keys.active.kid
    body = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert set(body) >= {"iss", "aud", "sub", "role", "exp", "iat", "nbf", "jti", "typ"}
    assert body["typ"] == "access"
    assert body["role"] == "user"
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 15 * 60


async def test_alg_none_is_refused(management: Management) -> None:
    user = await management.create_user("none@example.com", role=Role.admin)
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": management.app.state.keys.active.kid}).encode())
    payload = b64(json.dumps(claims(management, user.id)).encode())
    assert "algorithm 'none'" in await refused(management, f"{header}.{payload}.")


async def test_a_token_signed_by_another_key_is_refused(management: Management) -> None:
    user = await management.create_user("other@example.com")
    stranger = Ed25519PrivateKey.generate()
    kid = management.app.state.keys.active.kid  # even claiming our key's id
    token = jwt.encode(claims(management, user.id), stranger, algorithm="EdDSA", headers={"kid": kid})
    assert "Signature verification failed" in await refused(management, token)
    token = jwt.encode(claims(management, user.id), stranger, algorithm="EdDSA", headers={"kid": "made-up"})
    assert "unknown signing key" in await refused(management, token)


async def test_hs256_made_with_the_public_key_is_refused(management: Management) -> None:
    user = await management.create_user("hs@example.com")
    key = management.app.state.keys.active
    public_pem = key.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(json.dumps(claims(management, user.id)).encode())
    for secret in (public_pem, key.jwk()["x"].encode()):
        signature = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        assert "algorithm 'HS256'" in await refused(management, f"{header}.{payload}.{signature}")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"exp": int((datetime.now(UTC) - timedelta(seconds=5)).timestamp())}, "expired"),
        ({"nbf": int((datetime.now(UTC) + timedelta(minutes=10)).timestamp())}, "not yet valid"),
        ({"aud": "someone-else"}, "Audience doesn't match"),
        ({"iss": "evil"}, "Invalid issuer"),
        ({"typ": "refresh"}, "malformed claims"),
    ],
)
async def test_claims_that_do_not_hold_are_refused(management: Management, change: dict[str, Any], reason: str) -> None:
    user = await management.create_user(f"{uuid.uuid4().hex[:8]}@example.com")
    assert reason in await refused(management, signed(management, claims(management, user.id, **change)))


async def test_a_refresh_token_is_not_an_access_token(management: Management) -> None:
    await management.create_user("refresh@example.com")
    tokens = await management.login("refresh@example.com")
    assert "not a JWT" in await refused(management, tokens["refresh_token"])


async def test_tokens_of_a_disabled_user_stop_working(management: Management) -> None:
    await management.create_user("boss@example.com", role=Role.admin)
    user = await management.create_user("leaver@example.com")
    admin = await management.login("boss@example.com")
    tokens = await management.login("leaver@example.com")
    response = await management.client.patch(
        f"/api/v1/users/{user.id}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert await refused(management, tokens["access_token"]) == "token of a disabled user"
    refresh = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    login = await management.client.post(
        "/api/v1/auth/token", data={"username": "leaver@example.com", "password": PASSWORD}
    )
    assert login.status_code == 401


async def test_a_demoted_admin_keeps_no_token_of_their_admin_days(management: Management) -> None:
    """A role change ends every token of the user — personal access tokens and refresh tokens too: a PAT made
    as an admin must not carry admin power (the gateway and MCP read its role claim) after a demotion."""
    await management.create_user("boss@example.com", role=Role.admin)
    bob = await management.create_user("bob@example.com", role=Role.admin)
    admin = await management.login("boss@example.com")
    tokens = await management.login("bob@example.com")
    pat = await management.client.post(
        "/api/v1/users/me/tokens",
        json={"name": "agent", "scopes": ["read", "trade"]},
        headers=bearer(tokens["access_token"]),
    )
    assert pat.status_code == 201
    demoted = await management.client.patch(
        f"/api/v1/users/{bob.id}", json={"role": "user"}, headers=bearer(admin["access_token"])
    )
    assert demoted.status_code == 200
    assert "invalidated" in await refused(management, tokens["access_token"])
    assert "invalidated" in await refused(management, pat.json()["token"])
    refresh = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    again = await management.login("bob@example.com")  # a new login carries the new role
    me = await management.client.get("/api/v1/users/me", headers=bearer(again["access_token"]))
    assert me.json()["role"] == "user"


async def test_a_token_issued_before_logout_stops_working(management: Management) -> None:
    await management.create_user("logout@example.com")
    first = await management.login("logout@example.com")
    other_session = await management.login("logout@example.com")
    response = await management.client.post(
        "/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]}, headers=bearer(first["access_token"])
    )
    assert response.status_code == 204
    assert "invalidated" in await refused(management, first["access_token"])
    assert "invalidated" in await refused(management, other_session["access_token"])
    # This login's refresh chain ended; another login's refresh token still renews.
    dead = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert dead.status_code == 401
    renewed = await management.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other_session["refresh_token"]}
    )
    assert renewed.status_code == 200
    me = await management.client.get("/api/v1/users/me", headers=bearer(renewed.json()["access_token"]))
    assert me.status_code == 200


async def test_a_token_issued_before_a_password_change_stops_working(management: Management) -> None:
    await management.create_user("changer@example.com")
    tokens = await management.login("changer@example.com")
    pat = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "agent", "scopes": ["read"]}, headers=bearer(tokens["access_token"])
    )
    assert pat.status_code == 201
    new_password = "a brand new passphrase 42"
    response = await management.client.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    assert "invalidated" in await refused(management, tokens["access_token"])
    assert "invalidated" in await refused(management, pat.json()["token"])
    refresh = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    await management.login("changer@example.com", new_password)


async def test_a_replayed_refresh_token_revokes_its_family(management: Management) -> None:
    await management.create_user("replay@example.com")
    first = await management.login("replay@example.com")
    second = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    newer = second.json()["refresh_token"]
    assert newer != first["refresh_token"]

    replay = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    # The thief's replay also killed the newer token the real client holds.
    after = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": newer})
    assert after.status_code == 401
    reasons = [row.reason for row in await management.audit("auth.refresh") if row.outcome == "denied"]
    assert reasons == ["refresh token reused: family revoked", "refresh token revoked"]
