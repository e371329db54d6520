"""Bounded request bodies: a request larger than allowed is answered 413 before its body is read.

``shared.http.HttpPlumbing`` checks ``Content-Length`` first: over the limit, the answer is 413 at
once and nothing of the body is read. A body sent without a length (chunked) is counted as the application
reads it; once past the limit, the next read raises, and the request is answered 413 (the bytes read so far
are at most the limit plus one chunk). Paths may have limits of their own (the model upload, which streams
to disk, checks its own larger limit).
"""

from __future__ import annotations

import json

from starlette.types import Send

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    pass


def _payload(limit: int) -> bytes:
    detail = f"The request body is larger than {limit} bytes (FREQFLEET_MAX_BODY_BYTES): send less."
    return json.dumps({"detail": detail}).encode()


async def refuse_body(send: Send, limit: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The 413 for a body over ``limit`` bytes (the connection is closed: the rest of the body is not read)."""
    body = _payload(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
