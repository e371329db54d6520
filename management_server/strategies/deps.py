"""The strategy a route is about, loaded if the caller may see it (their own; any for an admin), else 404; the
queue checks are sent to, else 503."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, HTTPException

from management_server.auth.deps import Reader, Trader
from management_server.db import SessionDep
from management_server.deps import CheckQueueDep, found
from management_server.strategies import service
from management_server.strategies.models import Strategy
from management_server.strategies.tasks import CheckQueue

NOT_FOUND = "No such strategy."


async def visible_strategy(strategy_id: uuid.UUID, session: SessionDep, principal: Reader) -> Strategy:
    return found(await service.visible(session, principal.viewer, strategy_id), NOT_FOUND)


async def writable_strategy(strategy_id: uuid.UUID, session: SessionDep, principal: Trader) -> Strategy:
    return found(await service.visible(session, principal.viewer, strategy_id), NOT_FOUND)


async def locked_strategy(strategy_id: uuid.UUID, session: SessionDep, principal: Trader) -> Strategy:
    return found(await service.visible(session, principal.viewer, strategy_id, for_update=True), NOT_FOUND)


VisibleStrategy = Annotated[Strategy, Depends(visible_strategy)]  # to read (the read scope)
WritableStrategy = Annotated[Strategy, Depends(writable_strategy)]  # to delete (the trade scope)
LockedStrategy = Annotated[Strategy, Depends(locked_strategy)]  # its row locked, to queue a check (the trade scope)


async def check_queue(queue: CheckQueueDep) -> CheckQueue:
    """Where checks are sent; 503 when this app has no task broker."""
    if queue is None:
        raise HTTPException(503, "Strategy checks are not available: this server has no task broker.")
    return queue


CheckBroker = Annotated[CheckQueue, Depends(check_queue)]
