"""Liveness and readiness endpoints.

``/health/live`` answers as long as the process serves HTTP. ``/health/ready`` runs the
app's dependency checks (each with a deadline) and answers 503 with the reason of every
failing one, so an operator or an orchestrator sees at once what is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[object]]
CHECK_TIMEOUT_SECONDS = 3.0


async def run_checks(checks: Mapping[str, Check], deadline: float = CHECK_TIMEOUT_SECONDS) -> dict[str, str]:
    """Run every check concurrently; ``"ok"`` or a short reason per check."""

    async def one(check: Check) -> str:
        try:
            await asyncio.wait_for(check(), deadline)
        except TimeoutError:
            return f"unavailable: no answer within {deadline:g}s"
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return f"unavailable: {type(exc).__name__}{': ' + reason[:200] if reason else ''}"
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))


def health_router(service: str) -> APIRouter:
    """``/health/live`` and ``/health/ready``; checks come from ``app.state.readiness_checks``."""
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live", summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @router.get("/ready", summary="The process and what it depends on are up", response_model=None)
    async def ready(request: Request) -> JSONResponse:
        checks: Mapping[str, Check] = getattr(request.app.state, "readiness_checks", {})
        results = await run_checks(checks)
        ok = all(v == "ok" for v in results.values())
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "service": service, "checks": results}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    return router
