"""management_server/bots/deps.py: a bot the caller may see is loaded, its row locked for a change until the
request's transaction ends (checked against a second transaction of the real database); anyone else's is not found;
the routes that change a bot lock it, those that read it do not."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from management_server.analytics import router as analytics
from management_server.bots import router as bots
from management_server.bots import service
from management_server.bots.deps import locked_bot, visible_bot
from management_server.bots.models import Bot
from management_server.freqai import router as models
from management_server.users.models import Role, User
from management_server.users.viewer import Viewer
from tests.management_server.bots.test_lifecycle import admin_bot
from tests.management_server.conftest import Management


async def test_a_change_holds_the_bots_row_until_its_transaction_ends(management: Management) -> None:
    _, bot_id = await admin_bot(management)
    sessionmaker = management.app.state.sessionmaker
    async with sessionmaker() as session:
        root = (await session.execute(select(User).where(User.email == "root@example.com"))).scalar_one()
        owner = Viewer(root, True)
        stranger = Viewer(User(id=uuid.uuid4(), email="x@example.com", role=Role.user), False)

    async def lock_elsewhere() -> bool:
        """Whether another transaction can lock the row now (NOWAIT: no waiting for it)."""
        async with sessionmaker() as other:
            try:
                await other.execute(select(Bot).where(Bot.id == uuid.UUID(bot_id)).with_for_update(nowait=True))
            except DBAPIError:
                return False
            return True

    async with sessionmaker() as session:
        assert await service.visible(session, owner, uuid.UUID(bot_id)) is not None
        assert await lock_elsewhere()  # a read locks nothing
    async with sessionmaker() as session:
        assert await service.visible(session, owner, uuid.UUID(bot_id), lock=True) is not None
        assert not await lock_elsewhere()  # a change holds it...
        await session.rollback()
        assert await lock_elsewhere()  # ...until its transaction ends
    async with sessionmaker() as session:
        assert await service.visible(session, stranger, uuid.UUID(bot_id), lock=True) is None


def _calls(dependant: Dependant) -> set[Any]:
    return {dependant.call} | {call for sub in dependant.dependencies for call in _calls(sub)}


def test_every_route_of_a_bot_locks_it_to_change_it_and_only_then() -> None:
    routes = [
        route
        for router in (bots.router, models.bots_router, analytics.router)
        for route in router.routes
        if isinstance(route, APIRoute) and "{bot_id}" in route.path
    ]
    assert len(routes) == 18
    for route in routes:
        calls = _calls(route.dependant)
        writes = route.methods & {"POST", "PATCH", "DELETE"}
        assert (locked_bot in calls, visible_bot in calls) == (bool(writes), not writes), route.path
