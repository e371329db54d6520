"""Bounded request bodies: a request larger than allowed is answered 413 before its body is read.

:class:`BodyLimitMiddleware` (pure ASGI) checks ``Content-Length`` first: over the limit, the answer is 413 at
once and nothing of the body is read. A body sent without a length (chunked) is counted as the application
reads it; once past the limit, the next read raises, and the request is answered 413 (the bytes read so far
are at most the limit plus one chunk). Paths may have limits of their own (the model upload, which streams
to disk, checks its own larger limit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    pass


def _payload(limit: int) -> bytes:
    detail = f"The request body is larger than {limit} bytes (FREQFLEET_MAX_BODY_BYTES): send less."
    return json.dumps({"detail": detail}).encode()


async def _refuse(send: Send, limit: int) -> None:
    body = _payload(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await _refuse(send, limit)
                    return
                break
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(send, limit)
