"""The bot a route is about, loaded if the caller may see it (their own; any for an admin), else 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from management_server.auth.deps import Reader, Trader
from management_server.bots import service
from management_server.bots.models import Bot
from management_server.db import SessionDep
from management_server.deps import found

NOT_FOUND = "No such bot."


async def visible_bot(bot_id: uuid.UUID, session: SessionDep, principal: Reader) -> Bot:
    return found(await service.visible(session, principal.viewer, bot_id), NOT_FOUND)


async def locked_bot(bot_id: uuid.UUID, session: SessionDep, principal: Trader) -> Bot:
    """For a change: the row stays locked (SELECT ... FOR UPDATE) until the request's transaction ends, so a
    gateway's report applied meanwhile is not overwritten with what the request read before it."""
    return found(await service.visible(session, principal.viewer, bot_id, lock=True), NOT_FOUND)


VisibleBot = Annotated[Bot, Depends(visible_bot)]  # to read (the read scope)
LockedBot = Annotated[Bot, Depends(locked_bot)]  # to change or command (the trade scope)
