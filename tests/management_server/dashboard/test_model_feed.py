"""The models page's live rows: a model version changed by anyone reaches the pages of its owner and of admins, and
no other: a request's change, and one written with a connection of its own (as the training worker writes its
progress, in another process)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, update

from management_server.freqai.models import ModelVersion
from management_server.users.models import Role
from tests.management_server.bots.test_bots_api import session_of
from tests.management_server.conftest import Management
from tests.management_server.dashboard.test_fleet import feed, next_event
from tests.management_server.freqai.conftest import PAIRS


async def next_model(page: Any, model_id: str, kind: str = "model") -> dict[str, Any]:
    while True:  # an admin's page shows every model: others' changes pass by
        event, data = await next_event(page)
        if event == kind and data["id"] == model_id:
            return dict(data)


async def test_a_changed_model_reaches_its_owners_and_admins_pages_and_no_other(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    bob = await session_of(management, "bob@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    body = {"pairs": PAIRS, "timeframe": "5m", "days": 2}
    async with (
        feed(management.url, alice) as alices,
        feed(management.url, bob) as bobs,
        feed(management.url, admin) as admins,
    ):
        queued = await management.client.post("/api/v1/models/train", json=body, headers=alice)
        assert queued.status_code == 202, queued.text
        model_id = queued.json()["id"]
        row = await next_model(alices, model_id)
        assert (row["status"], row["name"], row["pairs"]) == ("queued", "FreqaiExample", PAIRS)
        assert (await next_model(admins, model_id))["owner_id"] == row["owner_id"]

        # The worker's progress: a statement on a connection of its own (no session of the app sees it).
        engine = management.app.state.sessionmaker.kw["bind"]
        async with engine.begin() as conn:
            progress = {"step": "train", "pairs_done": 1, "pairs_total": 2, "fraction": 0.5, "pair": "ETH/USDT"}
            await conn.execute(
                update(ModelVersion)
                .where(ModelVersion.id == uuid.UUID(model_id))
                .values(status="running", progress=progress)
            )
        row = await next_model(alices, model_id)
        assert (row["status"], row["progress"]["fraction"], row["progress"]["pair"]) == ("running", 0.5, "ETH/USDT")

        async with engine.begin() as conn:
            await conn.execute(delete(ModelVersion).where(ModelVersion.id == uuid.UUID(model_id)))
        assert await next_model(alices, model_id, "model_gone") == {"id": model_id}
        assert await next_model(admins, model_id, "model_gone") == {"id": model_id}
        assert bobs.empty()  # nothing of alice's reached bob
