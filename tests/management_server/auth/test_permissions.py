"""Every route with every kind of token, against the permission table in docs/permissions.md."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from management_server.config import ManagementSettings
from management_server.users.models import Role
from tests.management_server.conftest import Management, bearer

TABLE = Path(__file__).resolve().parents[3] / "docs" / "permissions.md"
LEVELS = ("anyone", "signed in", "session", "read", "trade", "admin")
ROW = re.compile(r"^\| (GET|POST|PUT|PATCH|DELETE) \| (/\S*) \| ([a-z ]+) \|$")

# What each kind of token satisfies.
KINDS: dict[str, set[str]] = {
    "no token": {"anyone"},
    "user PAT read": {"anyone", "signed in", "read"},
    "user PAT read+trade": {"anyone", "signed in", "read", "trade"},
    "admin PAT read+trade": {"anyone", "signed in", "read", "trade"},
    "admin PAT read+trade+admin": {"anyone", "signed in", "read", "trade", "admin"},
    "user login": {"anyone", "signed in", "session", "read", "trade"},
    "admin login": {"anyone", "signed in", "session", "read", "trade", "admin"},
}


LOGOUTS = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/auth/session")}
# The dashboard's session routes want the CSRF header (and its cookie) before anything else.
CSRF = {"X-CSRF-Token": "t", "Cookie": "freqfleet_csrf=t"}
STREAMS = {("GET", "/api/v1/dashboard/live")}  # answers that never end: only their status is read
HEADERS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/api/v1/auth/session/refresh"): CSRF,
    ("DELETE", "/api/v1/auth/session"): CSRF,
}
# Bodies that get a route past validation to its own checks (the rest get {}: a 422 is past authentication).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/users/me/tokens"): {"name": "another", "scopes": ["read"]},
}


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    """Some 400 requests in a few seconds from one address: the rate limit would answer them instead."""
    return management_settings.model_copy(update={"rate_limit_enabled": False})


def documented() -> dict[tuple[str, str], str]:
    rows = {}
    for line in TABLE.read_text().splitlines():
        if match := ROW.match(line.strip()):
            method, path, level = match.groups()
            assert level in LEVELS, line
            rows[(method, path)] = level
    return rows


def served(management: Management) -> list[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return [
        (method.upper(), path)
        for path, operations in management.app.openapi()["paths"].items()
        for method in operations
        if method in methods
    ]


def denied(response: httpx.Response) -> bool:
    """Stopped by authentication or authorization (not by what the route found or the body)."""
    if response.status_code == 403:
        return True
    if response.status_code != 401:
        return False
    body = response.json()
    detail = body.get("detail") if isinstance(body, dict) else None
    return isinstance(detail, str) and detail.startswith("Not authenticated")


async def tokens(management: Management) -> dict[str, str | None]:
    await management.create_user("perm-user@example.com")
    await management.create_user("perm-admin@example.com", role=Role.admin)
    user = (await management.login("perm-user@example.com"))["access_token"]
    admin = (await management.login("perm-admin@example.com"))["access_token"]

    async def pat(login: str, scopes: list[str]) -> str:
        made = await management.client.post(
            "/api/v1/users/me/tokens", json={"name": "-".join(scopes), "scopes": scopes}, headers=bearer(login)
        )
        assert made.status_code == 201, made.text
        token: str = made.json()["token"]
        return token

    return {
        "no token": None,
        "user PAT read": await pat(user, ["read"]),
        "user PAT read+trade": await pat(user, ["read", "trade"]),
        "admin PAT read+trade": await pat(admin, ["read", "trade"]),
        "admin PAT read+trade+admin": await pat(admin, ["read", "trade", "admin"]),
        "user login": user,
        "admin login": admin,
    }


async def test_every_route_answers_every_token_as_the_permission_table_says(management: Management) -> None:
    table = documented()
    routes = served(management)
    assert sorted(set(routes) - set(table)) == [], "routes missing from docs/permissions.md"
    assert sorted(set(table) - set(routes)) == [], "rows of docs/permissions.md the server does not serve"
    kinds = await tokens(management)
    # Logging out ends every login of the user: last of all, so every other route sees the tokens alive.
    calls = [(kind, route) for kind in kinds for route in routes if route not in LOGOUTS]
    calls += [(kind, route) for route in sorted(LOGOUTS) for kind in kinds]
    wrong: list[str] = []
    for kind, (method, path) in calls:
        token = kinds[kind]
        headers = (bearer(token) if token else {}) | HEADERS.get((method, path), {})
        url = re.sub(r"\{[^}]+\}", lambda m: "gw-none" if m.group(0) == "{gateway_id}" else str(uuid.uuid4()), path)
        body: dict[str, Any] = {"json": BODIES.get((method, path), {})} if method in ("POST", "PUT", "PATCH") else {}
        if (method, path) in STREAMS:
            async with management.client.stream(method, url, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
        else:
            response = await management.client.request(method, url, headers=headers, **body)
        assert response.status_code < 500, (kind, method, path, response.text)
        expected = table[(method, path)] in KINDS[kind]
        if denied(response) == expected:
            wrong.append(
                f"{kind}: {method} {path} needs {table[(method, path)]}, answered {response.status_code} "
                f"{response.text[:120]}"
            )
    assert wrong == [], "\n".join(wrong)
