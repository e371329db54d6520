"""Bounded bodies: 200 MiB sent to every route of the management server, unauthenticated, is answered 413
before it is read, and the server's memory does not grow with it."""

from __future__ import annotations

import psutil

from tests.helpers import OVERSIZED, api_requests, send_oversized
from tests.management_server.conftest import Management

MIB = 1024 * 1024


async def test_oversized_bodies_are_refused_before_they_are_read(management: Management) -> None:
    upload = "/api/v1/models/upload"  # streams to disk, with its own larger limit (checked below)
    requests = [(m, p) for m, p in api_requests(management.app) if p != upload]
    assert len(requests) > 40
    server = psutil.Process()  # the server runs in this process
    await send_oversized(management.url, "POST", "/api/v1/auth/refresh", chunked=False)  # warm up
    before = server.memory_info().rss
    for method, path in requests:
        status, sent = await send_oversized(management.url, method, path, chunked=False)
        assert status == 413, (method, path, status)  # refused on its Content-Length alone
        assert sent < OVERSIZED // 10, (method, path, sent)
        # Without a length: refused once past the limit, or answered by a route that reads no body at all.
        status, sent = await send_oversized(management.url, method, path, chunked=True)
        assert status == 413 or (status < 500 and sent < OVERSIZED // 10), (method, path, status, sent)
    grown = server.memory_info().rss - before
    assert grown < 10 * MIB, f"RSS grew by {grown / MIB:.1f} MiB"
    # The model upload: refused unauthenticated before its body is read.
    status, sent = await send_oversized(management.url, "POST", upload, chunked=False)
    assert status == 401
    assert sent < OVERSIZED // 10
    small = await management.client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 100})
    assert small.status_code != 413


async def test_a_422_never_echoes_its_input_back(management: Management) -> None:
    await management.create_user("big@example.com")
    token = (await management.login("big@example.com"))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    near_limit = "x" * (MIB - 4096)  # under the body limit: parsed, then refused
    bodies = [
        {"name": near_limit, "strategy_id": "not a uuid", "pairs": ["BTC/USDT"]},
        {"name": "ok", "strategy_id": "x", "pairs": [near_limit[:200]] * 2000},
        {"name": ["a"] * 50_000, "pairs": {str(n): n for n in range(20_000)}},
        [near_limit[:100]] * 5000,
    ]
    for body in bodies:
        answer = await management.client.post("/api/v1/bots", json=body, headers=headers)
        assert answer.status_code == 422, answer.text[:300]
        assert len(answer.content) <= 8 * 1024, len(answer.content)
        problems = answer.json()["detail"]
        assert problems
        assert all("msg" in p and "loc" in p for p in problems)
    # What a person needs is still there: where, what, and a short quote.
    first = (await management.client.post("/api/v1/bots", json=bodies[0], headers=headers)).json()["detail"]
    name = next(p for p in first if p["loc"] == ["body", "name"])
    assert name["input"].startswith("xxxx")
    assert name["input"].endswith(f"({len(near_limit):,} characters)")
