"""/api/v1/credentials: store exchange keys (encrypted), list and delete them; never read them back."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy.exc import IntegrityError

from management_server.audit.models import Outcome
from management_server.auth.deps import Audit, Reader, Trader
from management_server.credentials import service
from management_server.credentials.deps import OwnCredentials
from management_server.credentials.schemas import CredentialCreate, CredentialOut
from management_server.db import SessionDep
from management_server.deps import MasterKeysDep
from management_server.errors import errors
from shared.bus.messages import ExchangeCredentials

router = APIRouter(prefix="/api/v1/credentials", tags=["credentials"], responses=errors(401, 403, 404, 409, 429))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CredentialOut)
async def add_credentials(
    body: CredentialCreate, session: SessionDep, principal: Trader, keys: MasterKeysDep, audit: Audit
) -> CredentialOut:
    """Store an exchange's API keys for live bots. They are encrypted at once and never shown again."""
    secrets = ExchangeCredentials(key=body.key, secret=body.secret, password=body.password)
    row = await service.store(session, keys, principal.user.id, body.exchange, body.label, secrets)
    await session.commit()
    await audit.record(
        "credentials.create",
        Outcome.success,
        target_type="credentials",
        target_id=row.id,
        details={"exchange": row.exchange, "label": row.label},
    )
    return CredentialOut.model_validate(row)


@router.get("", response_model=list[CredentialOut])
async def list_credentials(session: SessionDep, principal: Reader) -> list[CredentialOut]:
    return [CredentialOut.model_validate(r) for r in await service.list_own(session, principal.user.id)]


@router.delete("/{credentials_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_credentials(row: OwnCredentials, session: SessionDep, audit: Audit) -> Response:
    credentials_id = row.id
    await session.delete(row)
    try:
        await session.commit()
    except IntegrityError:
        raise HTTPException(409, "A bot still uses these credentials: change or delete it first.") from None
    await audit.record("credentials.delete", Outcome.success, target_type="credentials", target_id=credentials_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
