"""/api/v1/credentials: store exchange keys (encrypted), list and delete them; never read them back."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from management_server.audit.models import Outcome
from management_server.auth.deps import Reader, Trader, client_ip
from management_server.credentials import service
from management_server.credentials.models import ExchangeCredential
from management_server.credentials.schemas import CredentialCreate, CredentialOut
from management_server.db import SessionDep
from management_server.errors import errors
from shared.bus.messages import ExchangeCredentials

router = APIRouter(prefix="/api/v1/credentials", tags=["credentials"], responses=errors(401, 403, 404, 409, 429))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CredentialOut)
async def add_credentials(
    body: CredentialCreate, request: Request, session: SessionDep, principal: Trader
) -> CredentialOut:
    """Store an exchange's API keys for live bots. They are encrypted at once and never shown again."""
    secrets = ExchangeCredentials(key=body.key, secret=body.secret, password=body.password)
    row = await service.store(
        session, request.app.state.master_keys, principal.user.id, body.exchange, body.label, secrets
    )
    await session.commit()
    await request.app.state.audit.record(
        "credentials.create",
        Outcome.success,
        principal.actor,
        target_type="credentials",
        target_id=row.id,
        ip=client_ip(request),
        details={"exchange": row.exchange, "label": row.label},
    )
    return CredentialOut.model_validate(row)


@router.get("", response_model=list[CredentialOut])
async def list_credentials(session: SessionDep, principal: Reader) -> list[CredentialOut]:
    rows = await session.execute(
        select(ExchangeCredential)
        .where(ExchangeCredential.owner_id == principal.user.id)
        .order_by(ExchangeCredential.created_at.desc())
    )
    return [CredentialOut.model_validate(r) for r in rows.scalars()]


@router.delete("/{credentials_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_credentials(
    credentials_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader
) -> Response:
    row = await session.get(ExchangeCredential, credentials_id)
    if row is None or row.owner_id != principal.user.id:
        raise HTTPException(404, "No such credentials.")
    await session.delete(row)
    try:
        await session.commit()
    except IntegrityError:
        raise HTTPException(409, "A bot still uses these credentials: change or delete it first.") from None
    await request.app.state.audit.record(
        "credentials.delete",
        Outcome.success,
        principal.actor,
        target_type="credentials",
        target_id=credentials_id,
        ip=client_ip(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
