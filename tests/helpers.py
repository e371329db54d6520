"""Helpers the tests share: free ports, polling with a deadline, a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await predicate()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


@asynccontextmanager
async def serve(app: FastAPI, port: int | None = None, **options: Any) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn server on a free loopback port (or ``port``); yields its base URL.
    ``options``: more of uvicorn's ``Config``."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on", **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 30s")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "condition"
) -> None:
    """Poll a plain predicate from async code, yielding to the event loop between polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


OVERSIZED = 200 * 1024 * 1024


async def send_oversized(url: str, method: str, path: str, *, chunked: bool) -> tuple[int, int]:
    """Send ``OVERSIZED`` bytes of body (announced, or chunked) until the server answers; its status and the
    bytes sent by then. A raw socket: an HTTP client would refuse to read an answer before it sent the body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {OVERSIZED}"
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode()
    )
    chunk = b"[" * 65536
    answer = asyncio.create_task(reader.readline())
    sent = 0
    try:
        while not answer.done() and sent < OVERSIZED:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
        line = await asyncio.wait_for(answer, 30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(line.split()[1]), sent


def api_requests(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the app's OpenAPI document, path parameters filled with a random UUID."""
    import re
    import uuid

    methods = {"get", "post", "put", "patch", "delete"}
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method in methods
    ]
