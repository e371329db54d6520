"""The dashboard: its page at ``/``, its files under ``/ui/``, and the API answers only it needs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import FileResponse, StreamingResponse

from management_server.auth.deps import Reader
from management_server.dashboard import service
from management_server.db import SessionDep
from management_server.deps import LiveFeedDep
from management_server.errors import errors
from shared.http import json_with_etag

STATIC = Path(__file__).parent / "static"

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"], responses=errors(401, 403, 429))
page_router = APIRouter(include_in_schema=False)


@page_router.get("/")
async def page() -> FileResponse:
    """The dashboard (one page; it routes by the URL's fragment)."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get(
    "/live",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def live(principal: Reader, feed: LiveFeedDep) -> StreamingResponse:
    """Server-Sent Events: `bot` (a bot's fleet row, as `/fleet` has it) whenever one of your bots changes (an
    admin: any bot), `gone` when one is deleted, `ready` first; a keepalive comment every 15 s. The stream ends
    when the token expires: connect again with a new one."""
    until = asyncio.get_running_loop().time() + max(0.0, principal.claims.expires_at.timestamp() - time.time())
    return StreamingResponse(
        feed.stream(principal.viewer, until),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/fleet", responses={304: {"description": "Unchanged since the ETag sent"}})
async def fleet(
    session: SessionDep, principal: Reader, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """Every bot you may see (an admin: all, with owners), one row each: settings, desired and actual state, what
    its gateway last reported (Freqtrade's state, open trades, profit, drawdown) and its problems in words."""
    return json_with_etag(await service.fleet(session, principal.viewer), if_none_match)
