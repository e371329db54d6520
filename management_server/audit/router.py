"""/api/v1/audit: the audit log, newest first, for admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from management_server.audit.models import Outcome
from management_server.audit.schemas import AuditEntryOut, AuditPage
from management_server.audit.service import AuditQuery, search
from management_server.auth.deps import AdminPrincipal
from management_server.db import SessionDep
from management_server.errors import errors

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=errors(401, 403, 429))


@router.get("", response_model=AuditPage)
async def list_audit(
    session: SessionDep,
    _: AdminPrincipal,
    actor_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Outcome | None = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Filter by actor, action, outcome, target and time; page with `before_id=<next_before_id>`."""
    query = AuditQuery(actor_id, action, outcome, target_type, target_id, since, until, before_id, limit)
    entries = await search(session, query)
    return AuditPage(
        items=[AuditEntryOut.model_validate(e) for e in entries],
        next_before_id=entries[-1].id if len(entries) == limit else None,
    )
