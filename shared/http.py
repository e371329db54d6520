"""HTTP plumbing both FastAPI apps share: correlation ids, access log, metrics, errors."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from shared.logging import get_logger
from shared.security_headers import security_headers

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = get_logger("freqfleet.access")
error_log = get_logger("freqfleet.error")


def is_safe_request_id(value: str) -> bool:
    """Accept caller ids that can't forge log lines or headers (no spaces, no control characters)."""
    return bool(_SAFE_REQUEST_ID.match(value))


class AccessLogMiddleware:
    """One structured log line per HTTP request, with the correlation id bound."""

    def __init__(self, app: ASGIApp, quiet_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            if path not in self.quiet_paths or status >= 400:
                access_log.info(
                    "request",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    client=(scope.get("client") or ("", 0))[0],
                )


MAX_ERRORS = 20  # a 422 lists at most this many problems
MAX_QUOTE = 80  # characters of a bad value a 422 quotes back


def _quote(value: Any) -> Any:
    """A bad value as a 422 shows it: scalars as they are (long strings cut), containers by their size."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_QUOTE else value[:MAX_QUOTE] + f"... ({len(value):,} characters)"
    if isinstance(value, dict):
        return f"an object of {len(value):,} keys"
    if isinstance(value, list | tuple):
        return f"a list of {len(value):,} items"
    return _quote(str(value))


def bounded_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors with what a person needs (where, what is wrong, a short quote of the value): never the
    whole input back (a 10 MB body must not come back as a 10 MB answer), at most ``MAX_ERRORS`` of them."""
    shown = []
    for error in list(errors)[:MAX_ERRORS]:
        item: dict[str, Any] = {
            "type": str(error.get("type", "value_error"))[:64],
            "loc": [part if isinstance(part, int) else str(part)[:64] for part in error.get("loc", ())][:10],
            "msg": str(error.get("msg", ""))[:300],
        }
        if "input" in error:
            item["input"] = _quote(error["input"])
        shown.append(item)
    if len(errors) > MAX_ERRORS:
        shown.append({"type": "too_many_errors", "loc": [], "msg": f"and {len(errors) - MAX_ERRORS} more problems"})
    return shown


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": bounded_errors(exc.errors())})


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = correlation_id.get()
    error_log.exception("unhandled error", method=request.method, path=request.url.path)
    body: dict[str, Any] = {
        "detail": "Internal server error. Quote the request id when reporting it.",
        "request_id": request_id,
    }
    headers = dict(security_headers(request.url.path))  # this answer bypasses the middleware stack
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(status_code=500, content=body, headers=headers)


def install_http_plumbing(
    app: FastAPI,
    registry: CollectorRegistry,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_limits: Mapping[str, int] | None = None,
) -> None:
    """Access log, correlation id (``X-Request-ID``), Prometheus ``/metrics``, a JSON 500, bounded bodies
    (413 before the body is read; ``body_limits`` gives paths limits of their own) and bounded 422 answers."""
    # Added first, so it runs inside the correlation id and the access log: a 413 is logged like any answer.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, per_path=body_limits)
    Instrumentator(
        registry=registry,
        excluded_handlers=["/metrics"],
        should_group_status_codes=False,
    ).instrument(app).expose(app, endpoint="/metrics", include_in_schema=False)
    app.add_middleware(AccessLogMiddleware, quiet_paths=frozenset({"/health/live", "/health/ready", "/metrics"}))
    app.add_middleware(CorrelationIdMiddleware, header_name=REQUEST_ID_HEADER, validator=is_safe_request_id)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unhandled_error)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve an app in the foreground the way every Freqfleet service does (``freqfleet <service>``).

    uvicorn's own logging is left to ours (JSON, with the access log written by our middleware), and
    the objects created at import and start-up are frozen out of the garbage collector's reach, which
    keeps full collections (measured at ~30 ms each under load) off the request path.
    """
    import gc

    import uvicorn

    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, proxy_headers=False)


def json_with_etag(body: bytes, if_none_match: str | None) -> Response:
    """A JSON answer with a strong ``ETag`` of its bytes; 304 with no body when the client sent that ETag back in
    ``If-None-Match`` (a list polled every few seconds costs the client and the network nothing while unchanged)."""
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    sent = {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")}
    if etag in sent or "*" in sent:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})
