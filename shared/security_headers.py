"""Security headers on every response, and CORS from an allowlist (both services use them).

Every HTTP response gets ``X-Content-Type-Options``, ``X-Frame-Options``, ``Referrer-Policy``,
``Cross-Origin-Opener-Policy``, ``Permissions-Policy`` and a ``Content-Security-Policy``: the strictest
one (``default-src 'none'``: a JSON API loads nothing) except on the interactive docs pages, whose HTML
(FastAPI's Swagger UI and ReDoc) loads its scripts and styles from cdn.jsdelivr.net, ReDoc's fonts from
Google Fonts and the favicon from fastapi.tiangolo.com, runs an inline start-up script and a search worker
from a ``blob:`` URL; their policy allows exactly that. API responses (``/api/...``) also get
``Cache-Control: no-store``, and with ``hsts=True`` (production, behind TLS) every response gets
``Strict-Transport-Security``. A header the route set itself is left as it is.

``shared.http.HttpPlumbing`` adds them. Responses that Starlette's outermost ``ServerErrorMiddleware`` writes
(the generic 500) don't pass through any middleware; :func:`security_headers` gives the same list for such a
handler to add.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

API_PREFIX = "/api/"
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})

STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'",
        "style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'",
        "font-src 'self' https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# The management server's dashboard (``/`` and its files under ``/ui/``): its own files only, no inline script or
# style element, no other origin; style attributes set from script (the charts size their canvases) are allowed.
DASHBOARD_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
DASHBOARD_PREFIX = "/ui/"
HSTS = "max-age=63072000; includeSubDomains"

_ALWAYS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)

CORS_METHODS = ["GET", "POST", "PATCH", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type", "X-Request-ID"]
CORS_EXPOSED_HEADERS = ["X-Request-ID", "Retry-After"]


def security_headers(
    path: str, *, hsts: bool = False, docs_paths: frozenset[str] = DOCS_PATHS
) -> list[tuple[str, str]]:
    """The security headers a response to ``path`` (without the app's root path) gets."""
    headers = list(_ALWAYS)
    if path in docs_paths:
        policy = DOCS_CSP
    elif path == "/" or path.startswith(DASHBOARD_PREFIX):
        policy = DASHBOARD_CSP
    else:
        policy = STRICT_CSP
    headers.append(("Content-Security-Policy", policy))
    if path.startswith(API_PREFIX):
        headers.append(("Cache-Control", "no-store"))
    if hsts:
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def install_cors(app: Starlette, origins: list[str]) -> None:
    """Allow browsers on ``origins`` (exact origins, e.g. ``https://fleet.example.com``) to call the API with
    a bearer token; no cookies (``allow_credentials=False``). Nothing is installed for an empty list, so
    cross-origin browser calls are refused."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_credentials=False,
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        max_age=600,
    )
