"""The user an admin route is about, else 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from management_server.auth.deps import AdminPrincipal
from management_server.db import SessionDep
from management_server.deps import found
from management_server.users.models import User

NOT_FOUND = "No such user."


async def managed_user(user_id: uuid.UUID, session: SessionDep, admin: AdminPrincipal) -> User:
    return found(await session.get(User, user_id), NOT_FOUND)


ManagedUser = Annotated[User, Depends(managed_user)]
