"""management_server/strategies/deps.py: checks need a task broker (503 without one). A strategy the caller
may not see is not found by any route that loads one."""

from __future__ import annotations

from typing import cast

import pytest
from fastapi import HTTPException

from management_server.strategies.deps import check_queue
from management_server.strategies.tasks import CheckQueue
from management_server.users.models import Role
from tests.management_server.bots.test_bots_api import session_of, upload
from tests.management_server.conftest import Management


async def test_checks_need_a_task_broker() -> None:
    with pytest.raises(HTTPException) as raised:
        await check_queue(None)
    assert (raised.value.status_code, raised.value.detail) == (
        503,
        "Strategy checks are not available: this server has no task broker.",
    )
    queue = cast(CheckQueue, object())
    assert await check_queue(queue) is queue


async def test_someone_elses_strategy_is_not_found_by_any_route(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    bob = await session_of(management, "bob@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, alice)).json()["id"]
    client = management.client
    for method, path in (
        ("GET", f"/api/v1/strategies/{strategy}"),
        ("DELETE", f"/api/v1/strategies/{strategy}"),
        ("POST", f"/api/v1/strategies/{strategy}/check"),
    ):
        answer = await client.request(method, path, headers=bob)
        assert (answer.status_code, answer.json()["detail"]) == (404, "No such strategy."), path
    assert (await client.get(f"/api/v1/strategies/{strategy}", headers=alice)).status_code == 200
    assert (await client.get(f"/api/v1/strategies/{strategy}", headers=admin)).status_code == 200
