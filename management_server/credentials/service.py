"""Storing exchange credentials sealed with the master key, and opening them for a live START_BOT."""

from __future__ import annotations

import hashlib
import json
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.credentials.models import ExchangeCredential
from management_server.security.crypto import MasterKeys, Sealed
from shared.bus.messages import ExchangeCredentials

NOT_FOUND = "No such credentials."


async def own(session: AsyncSession, owner_id: uuid.UUID, credentials_id: uuid.UUID) -> ExchangeCredential | None:
    """The credentials if they are this user's (nobody else's are shown, an admin's neither)."""
    row = await session.get(ExchangeCredential, credentials_id)
    return row if row is not None and row.owner_id == owner_id else None


async def list_own(session: AsyncSession, owner_id: uuid.UUID) -> list[ExchangeCredential]:
    """The user's stored credentials, newest first."""
    rows = await session.execute(
        select(ExchangeCredential)
        .where(ExchangeCredential.owner_id == owner_id)
        .order_by(ExchangeCredential.created_at.desc())
    )
    return list(rows.scalars())


def _associated(credential_id: uuid.UUID, owner_id: uuid.UUID) -> bytes:
    return f"exchange-credential:{credential_id}:{owner_id}".encode()


async def store(
    session: AsyncSession,
    keys: MasterKeys,
    owner_id: uuid.UUID,
    exchange: str,
    label: str,
    secrets: ExchangeCredentials,
) -> ExchangeCredential:
    credential_id = uuid.uuid4()
    plaintext = json.dumps(secrets.model_dump(mode="json")).encode()
    sealed = keys.seal(plaintext, _associated(credential_id, owner_id))
    row = ExchangeCredential(
        id=credential_id,
        owner_id=owner_id,
        exchange=exchange,
        label=label,
        key_id=sealed.key_id,
        ciphertext=sealed.blob,
    )
    session.add(row)
    await session.flush()
    return row


def revision(row: ExchangeCredential) -> str:
    """Which version of the stored credential (changes whenever it is stored anew; reveals nothing)."""
    return f"{row.id}:{hashlib.sha256(row.ciphertext).hexdigest()[:16]}"


def reveal(keys: MasterKeys, row: ExchangeCredential) -> ExchangeCredentials:
    """The keys, for the START_BOT of a live bot only."""
    plaintext = keys.open(Sealed(row.key_id, row.ciphertext), _associated(row.id, row.owner_id))
    return ExchangeCredentials.model_validate(json.loads(plaintext))
