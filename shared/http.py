"""HTTP plumbing both FastAPI apps share: correlation ids, access log, metrics, errors."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.body_limit import DEFAULT_MAX_BODY_BYTES, BodyTooLarge, refuse_body
from shared.logging import get_logger
from shared.security_headers import security_headers

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = get_logger("freqfleet.access")
error_log = get_logger("freqfleet.error")


def is_safe_request_id(value: str) -> bool:
    """Accept caller ids that can't forge log lines or headers (no spaces, no control characters)."""
    return bool(_SAFE_REQUEST_ID.match(value))


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})  # logged only when they fail


class HttpPlumbing:
    """One pure-ASGI layer for what every request goes through, in the order it applies:

    - the correlation id: the caller's ``X-Request-ID`` when it is safe (:func:`is_safe_request_id`), else a new
      one; put into the request's headers (for handlers that read it), ``asgi_correlation_id``'s context variable
      (every log line of the request carries it) and the answer's headers; WebSockets get one too;
    - bounded bodies (``shared.body_limit``): 413 before the body is read when ``Content-Length`` is over the
      path's limit, or as soon as a body sent without one passes it;
    - the security headers (``shared.security_headers``) an answer doesn't set itself;
    - Prometheus: ``http_requests_total{method,status,handler}`` and ``http_request_duration_seconds{method,handler}``,
      the handler being the route's template (``none`` for no route, as prometheus-fastapi-instrumentator named it);
    - one access log line (not for health probes and ``/metrics`` unless they fail).

    One layer instead of five middlewares (asgi-correlation-id's, the instrumentator's, ours for the access log,
    body limits and headers): each wrapped every ``send`` again, and the instrumentator matched the request against
    every route a second time to name its handler; here the handler is the route FastAPI matched
    (``scope["route"]``). docs/benchmarks.md, "api", has what that saved.
    """

    def __init__(
        self,
        app: ASGIApp,
        registry: CollectorRegistry,
        *,
        hsts: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.hsts = hsts
        self.max_body_bytes = max_body_bytes
        self.body_limits = dict(body_limits or {})
        self.requests = Counter(
            "http_requests_total", "HTTP requests answered.", ("method", "status", "handler"), registry=registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ("method", "handler"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                _take_correlation_id(scope)
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _take_correlation_id(scope)
        path: str = scope["path"]
        limit = self.body_limits.get(path, self.max_body_bytes)
        status = 500
        answered = False
        ours = [(name.lower().encode(), value.encode()) for name, value in security_headers(path, hsts=self.hsts)]
        ours.append((b"x-request-id", request_id.encode()))
        try:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if not value.isdigit() or int(value) > limit:
                        status, answered = 413, True
                        await refuse_body(send, limit, ours)
                        return
                    break
            received = 0

            async def counted() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge
                return message

            async def send_with_headers(message: Message) -> None:
                nonlocal status, answered
                if message["type"] == "http.response.start":
                    status, answered = message["status"], True
                    headers = list(message.get("headers", ()))  # a copy: a response's own list may be sent again
                    present = {name.lower() for name, _ in headers}
                    headers.extend(item for item in ours if item[0] not in present)
                    message["headers"] = headers
                await send(message)

            try:
                await self.app(scope, counted, send_with_headers)
            except BodyTooLarge:
                if answered:
                    raise
                status, answered = 413, True
                await refuse_body(send, limit, ours)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            handler = getattr(route, "path", None) or "none"
            method = scope["method"]
            if handler != "/metrics":
                self.requests.labels(method, str(status), handler).inc()
                self.duration.labels(method, handler).observe(elapsed)
            if path not in QUIET_PATHS or status >= 400:
                client = scope.get("client")
                access_log.info(
                    "request",
                    method=method,
                    path=path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    client=client[0] if client else "",
                )


def _take_correlation_id(scope: Scope) -> str:
    """The request's id: the caller's when safe, else a new one (then also put into the request's headers)."""
    sent = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            sent = value.decode("latin-1")
            break
    if sent is None or not is_safe_request_id(sent):
        fresh = uuid.uuid4().hex
        headers = [item for item in scope["headers"] if item[0] != b"x-request-id"]
        headers.append((b"x-request-id", fresh.encode()))
        scope["headers"] = headers
        sent = fresh
    correlation_id.set(sent)
    return sent


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
    headers = dict(security_headers(request.url.path))  # this answer bypasses the middleware stack
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    unavailable: Callable[[BaseException], str | None] | None = getattr(request.app.state, "unavailable", None)
    if unavailable is not None and (detail := unavailable(exc)) is not None:  # a dependency away for a moment
        error_log.warning(
            "request failed: a dependency is unavailable", path=request.url.path, error=f"{type(exc).__name__}"
        )
        return JSONResponse(status_code=503, content={"detail": detail}, headers=headers | {"Retry-After": "2"})
    error_log.exception("unhandled error", method=request.method, path=request.url.path)
    body: dict[str, Any] = {
        "detail": "Internal server error. Quote the request id when reporting it.",
        "request_id": request_id,
    }
    return JSONResponse(status_code=500, content=body, headers=headers)


def install_http_plumbing(
    app: FastAPI,
    registry: CollectorRegistry,
    *,
    hsts: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_limits: Mapping[str, int] | None = None,
    unavailable: Callable[[BaseException], str | None] | None = None,
) -> None:
    """:class:`HttpPlumbing` (correlation id, bounded bodies: 413 before the body is read, ``body_limits`` giving
    paths limits of their own; security headers, HSTS with ``hsts``; request metrics; the access log) as the
    outermost middleware (add the others first), Prometheus ``/metrics``, a JSON 500 and bounded 422 answers; an
    error that ``unavailable`` recognises (a database failing over) is a 503 with its words and a Retry-After."""
    app.state.unavailable = unavailable
    app.add_middleware(
        HttpPlumbing, registry=registry, hsts=hsts, max_body_bytes=max_body_bytes, body_limits=body_limits
    )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unhandled_error)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def exposition(registry: CollectorRegistry) -> bytes:
    """What ``/metrics`` answers. Under several worker processes (:func:`serve_workers`: prometheus_client's
    multiprocess mode) a scrape reaches one of them: the counters and histograms are then every worker's, summed
    from their files, and the gauges of state this process's own (each worker reads them itself)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(registry)
    summed = CollectorRegistry()
    MultiProcessCollector(summed, directory)  # type: ignore[no-untyped-call]
    families = list(summed.collect())
    names = {family.name for family in families}
    families += [family for family in registry.collect() if family.name not in names]
    answer = CollectorRegistry(auto_describe=False)
    answer.register(_Families(families))
    return generate_latest(answer)


def proxy_options(trusted_proxies: Sequence[str] = ()) -> dict[str, Any]:
    """uvicorn's options for who the client is: the peer, unless the peer is one of ``trusted_proxies`` (addresses or
    networks of reverse proxies), whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` name the client then. Only a
    proxy you run may be trusted: anyone else could name any address (and walk around per-address throttles)."""
    if not trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted_proxies)}


def serve_workers(
    factory: str, host: str, port: int, workers: int, data_dir: Path, trusted_proxies: Sequence[str] = ()
) -> None:
    """Serve ``factory`` (``module:function`` returning the app) in ``workers`` processes sharing the port
    (uvicorn's; a worker that dies is replaced). Their metrics are counted in files of a folder made for this run
    (prometheus_client's multiprocess mode, see :func:`exposition`), removed when the server stops."""
    import uvicorn

    data_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=data_dir))  # 0700
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # read by the workers as they start
    try:
        uvicorn.run(
            factory,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            **proxy_options(trusted_proxies),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve(app: FastAPI, host: str, port: int, trusted_proxies: Sequence[str] = ()) -> None:
    """Serve an app in the foreground the way every Freqfleet service does (``freqfleet <service>``).

    uvicorn's own logging is left to ours (JSON, with the access log written by our middleware), and
    the objects created at import and start-up are frozen out of the garbage collector's reach, which
    keeps full collections (measured at ~30 ms each under load) off the request path.
    """
    import gc

    import uvicorn

    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, **proxy_options(trusted_proxies))


def json_with_etag(body: bytes, if_none_match: str | None) -> Response:
    """A JSON answer with a strong ``ETag`` of its bytes; 304 with no body when the client sent that ETag back in
    ``If-None-Match`` (a list polled every few seconds costs the client and the network nothing while unchanged)."""
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    sent = {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")}
    if etag in sent or "*" in sent:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})
