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
