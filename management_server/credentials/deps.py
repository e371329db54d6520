"""The exchange credentials a route is about, loaded if they are the caller's own (even an admin sees only
theirs), else 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from management_server.auth.deps import Trader
from management_server.credentials import service
from management_server.credentials.models import ExchangeCredential
from management_server.db import SessionDep
from management_server.deps import found


async def own_credentials(credentials_id: uuid.UUID, session: SessionDep, principal: Trader) -> ExchangeCredential:
    return found(await service.own(session, principal.user.id, credentials_id), service.NOT_FOUND)


OwnCredentials = Annotated[ExchangeCredential, Depends(own_credentials)]  # to delete (the trade scope)
