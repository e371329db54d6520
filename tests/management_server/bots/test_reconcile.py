"""Reconcile against a real management server and PostgreSQL: each gateway's inventory against every bot's
desired state (the gateway played by the test's heartbeats; passes run by the test, not by the clock)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from management_server.audit.models import AuditEntry
from management_server.bots.models import Bot
from management_server.bots.reconcile import Reconciler
from management_server.bus.models import OutboxMessage
from management_server.config import ManagementSettings
from management_server.users.models import Role
from shared.bus.messages import InventoryEntry
from shared.bus.streams import commands_stream
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.bots.test_lifecycle import GATEWAY, heartbeat
from tests.management_server.conftest import PASSWORD, Management, bearer
from tests.management_server.dashboard.test_fleet import feed, next_event

GRACE = 15.0


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    # Passes only when the test runs one.
    return management_settings.model_copy(update={"reconcile_interval": 3600.0, "reconcile_grace": GRACE})


def entry(bot_id: str | uuid.UUID, generation: int, desired: str, actual: str) -> InventoryEntry:
    return InventoryEntry(bot_id=uuid.UUID(str(bot_id)), generation=generation, desired=desired, actual=actual)  # type: ignore[arg-type]


async def inventory(management: Management, entries: list[InventoryEntry], at: datetime | None = None) -> None:
    """GATEWAY's heartbeat saying it has these bots."""
    await heartbeat(management, at=at, inventory=entries)


async def set_bot(management: Management, bot_id: str, **values: Any) -> None:
    async with management.app.state.sessionmaker.begin() as session:
        await session.execute(update(Bot).where(Bot.id == uuid.UUID(bot_id)).values(**values))


async def bot_row(management: Management, bot_id: str) -> Bot:
    async with management.app.state.sessionmaker() as session:
        bot = await session.get(Bot, uuid.UUID(bot_id))
        assert bot is not None
        return bot


async def outbox(management: Management, gateway_id: str = GATEWAY) -> list[str]:
    async with management.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(OutboxMessage.message_type)
            .where(OutboxMessage.stream == commands_stream(gateway_id))
            .order_by(OutboxMessage.id)
        )
        return list(rows.scalars())


def reconciler(management: Management) -> Reconciler:
    found: Reconciler = management.app.state.reconciler
    return found


async def admin_bot(management: Management) -> tuple[dict[str, str], str]:
    """A new bot of the admin's (the admin and the strategy made on first use)."""
    login = await management.client.post(
        "/api/v1/auth/token", data={"username": "root@example.com", "password": PASSWORD}
    )
    if login.status_code == 200:
        admin = bearer(login.json()["access_token"])
    else:
        admin = await session_of(management, "root@example.com", Role.admin)
    strategies = (await management.client.get("/api/v1/strategies", headers=admin)).json()
    strategy = strategies[0]["id"] if strategies else (await upload(management, admin)).json()["id"]
    body = bot_body(strategy, name=f"bot-{uuid.uuid4().hex[:8]}")
    created = await management.client.post("/api/v1/bots", json=body, headers=admin)
    assert created.status_code == 201, created.text
    return admin, str(created.json()["id"])


async def running_bot(management: Management) -> tuple[dict[str, str], str]:
    """A bot started on GATEWAY (generation 1), as the API leaves it; its command a minute old."""
    admin, bot_id = await admin_bot(management)
    await heartbeat(management)
    started = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    await set_bot(management, bot_id, actual_state="running", commanded_at=datetime.now(UTC) - timedelta(minutes=1))
    return admin, bot_id


async def test_a_bot_that_should_run_and_is_not_there_is_started_again_with_a_backoff(
    management: Management,
) -> None:
    _, bot_id = await running_bot(management)
    assert await outbox(management) == ["START_BOT"]
    await inventory(management, [])  # the gateway came back on an empty folder (a restore, a new host)

    now = datetime.now(UTC)
    done = await reconciler(management).pass_once(now)
    assert [(c.action, c.bot_id) for c in done] == [("state", uuid.UUID(bot_id)), ("start", uuid.UUID(bot_id))]
    assert await outbox(management) == ["START_BOT", "START_BOT"]
    bot = await bot_row(management, bot_id)
    assert (bot.desired_state, bot.actual_state, bot.generation, bot.reconcile_attempts) == (
        "running",
        "starting",
        2,
        1,
    )
    async with management.app.state.sessionmaker() as session:
        audited = (
            await session.execute(
                select(AuditEntry).where(AuditEntry.via == "reconcile", AuditEntry.action == "bot.start")
            )
        ).scalar_one()
    assert (audited.actor, audited.target_id, audited.outcome) == ("freqfleet:reconcile", bot_id, "requested")
    assert audited.command_id is not None

    # Still not there: nothing within the grace of its own command, then one more after the backoff, then a
    # longer wait.
    await inventory(management, [], at=now + timedelta(seconds=10))
    assert [c.action for c in await reconciler(management).pass_once(now + timedelta(seconds=10))] == []
    await inventory(management, [], at=now + timedelta(seconds=GRACE + 1))
    again = await reconciler(management).pass_once(now + timedelta(seconds=GRACE + 1))
    assert [c.action for c in again] == ["state", "start"]
    await inventory(management, [], at=now + timedelta(seconds=2 * GRACE + 2))
    assert [c.action for c in await reconciler(management).pass_once(now + timedelta(seconds=2 * GRACE + 2))] == [
        "state"
    ]
    assert await outbox(management) == ["START_BOT"] * 3

    # The gateway runs it at last: its word is the state, and the backoff starts over.
    await inventory(management, [entry(bot_id, 3, "running", "running")], at=now + timedelta(seconds=50))
    await reconciler(management).pass_once(now + timedelta(seconds=50))
    bot = await bot_row(management, bot_id)
    assert (bot.actual_state, bot.reconcile_attempts) == ("running", 0)


async def test_states_left_behind_by_a_crash_are_set_right(management: Management) -> None:
    _, stopping = await running_bot(management)
    _, paused = await running_bot(management)
    await set_bot(management, stopping, desired_state="stopped", actual_state="stopping")
    await inventory(management, [entry(paused, 1, "paused", "paused")])  # a pause the API never heard back about

    await reconciler(management).pass_once()
    assert (await bot_row(management, stopping)).actual_state == "stopped"  # no process: stopped, for good
    assert (await bot_row(management, paused)).actual_state == "paused"
    assert await outbox(management) == ["START_BOT", "START_BOT"]  # nothing sent for either


async def test_a_report_from_before_the_gateway_acted_on_a_pause_does_not_undo_it(management: Management) -> None:
    admin, bot_id = await running_bot(management)
    assert (await management.client.post(f"/api/v1/bots/{bot_id}/pause", headers=admin)).status_code == 200
    await set_bot(management, bot_id, actual_state="paused")  # the bot's paused status has come in
    # The heartbeat was built after the gateway took the PAUSE (generation 2) and before its bot's supervisor had
    # sent it to Freqtrade: the bot still ran then.
    taken = entry(bot_id, 2, "paused", "running").model_copy(update={"settled": False})
    await inventory(management, [taken])
    await reconciler(management).pass_once()
    assert (await bot_row(management, bot_id)).actual_state == "paused"

    await inventory(management, [entry(bot_id, 2, "paused", "running")])  # acted on, and the bot runs: it is true
    await reconciler(management).pass_once()
    assert (await bot_row(management, bot_id)).actual_state == "running"


async def test_what_runs_and_should_not_is_stopped(management: Management) -> None:
    _, bot_id = await running_bot(management)
    await set_bot(management, bot_id, desired_state="stopped", generation=2)  # its STOP_BOT was lost
    stranger = uuid.uuid4()  # a bot the gateway runs that is not placed there (deleted, or moved)
    await inventory(management, [entry(bot_id, 1, "running", "running"), entry(stranger, 4, "running", "running")])

    done = await reconciler(management).pass_once()
    assert sorted((c.action, c.bot_id) for c in done if c.command) == sorted(
        [("stop", uuid.UUID(bot_id)), ("stop", stranger)]
    )
    assert await outbox(management) == ["START_BOT", "STOP_BOT", "STOP_BOT"]
    bot = await bot_row(management, bot_id)
    assert (bot.actual_state, bot.generation) == ("running", 3)  # what the gateway says, until it stops


async def test_a_paused_bot_comes_back_paused_and_a_command_in_flight_is_left_alone(management: Management) -> None:
    admin, paused = await running_bot(management)
    await set_bot(management, paused, desired_state="paused")
    _, fresh = await admin_bot(management)
    await heartbeat(management)
    started = await management.client.post(f"/api/v1/bots/{fresh}/start", headers=admin)  # just sent
    assert started.status_code == 200
    await inventory(management, [])

    done = await reconciler(management).pass_once()
    assert [(c.action, str(c.bot_id)) for c in done if c.command] == [("start", paused), ("pause", paused)]
    bot = await bot_row(management, paused)
    assert (bot.desired_state, bot.generation) == ("paused", 3)
    assert (await bot_row(management, fresh)).actual_state == "starting"  # its START has time to arrive


async def test_bots_of_a_silent_gateway_read_unknown_then_lost(management: Management) -> None:
    _, bot_id = await running_bot(management)
    now = datetime.now(UTC)
    done = await reconciler(management).pass_once(now + timedelta(seconds=45))
    assert [(c.action, c.detail.split(":")[0]) for c in done] == [("state", "unknown")]
    assert (await bot_row(management, bot_id)).actual_state == "unknown"
    bot = await management.client.get(f"/api/v1/bots/{bot_id}", headers=(await admin_bot(management))[0])
    assert bot.json()["actual_state"] == "unknown"
    await reconciler(management).pass_once(now + timedelta(minutes=6))
    assert (await bot_row(management, bot_id)).actual_state == "lost"
    # Its gateway is back and runs it.
    await inventory(management, [entry(bot_id, 1, "running", "running")])
    await reconciler(management).pass_once()
    assert (await bot_row(management, bot_id)).actual_state == "running"


async def test_a_halt_under_way_is_not_undone_by_the_reports_of_its_seconds(management: Management) -> None:
    """An emergency stop exits the bot's trades before its process ends: a report from those seconds says paused
    with the halt's generation. The bot stays halted; a report long after the halt still saying paused is the
    truth (the halt did not end it) and is taken."""
    _, bot_id = await running_bot(management)
    halted_at = datetime.now(UTC)
    await set_bot(
        management, bot_id, desired_state="halted", actual_state="halted", generation=2, commanded_at=halted_at
    )
    await inventory(management, [entry(bot_id, 2, "halted", "paused")], at=halted_at + timedelta(seconds=1))
    assert await reconciler(management).pass_once(now=halted_at + timedelta(seconds=2)) == []
    assert (await bot_row(management, bot_id)).actual_state == "halted"

    later = halted_at + timedelta(seconds=GRACE + 5)
    await inventory(management, [entry(bot_id, 2, "halted", "paused")], at=later)
    done = await reconciler(management).pass_once(now=later + timedelta(seconds=1))
    assert [c.action for c in done] == ["state"]
    assert (await bot_row(management, bot_id)).actual_state == "paused"


async def test_a_control_action_and_the_reconcilers_marks_reach_the_dashboard(management: Management) -> None:
    """Both write with statements of their own (no ORM flush to notice them): they say which bots they changed."""
    admin, _ = await admin_bot(management)  # the admin and their strategy

    async def next_row_of(page: Any, bot_id: str) -> dict[str, Any]:
        while True:  # an admin's page shows every bot: other bots' changes pass by
            kind, row = await next_event(page)
            if kind == "bot" and row["id"] == bot_id:
                return dict(row)

    async with feed(management.url, admin) as page:
        _, bot_id = await admin_bot(management)  # one change (one commit), announced once
        assert (await next_row_of(page, bot_id))["desired_state"] == "stopped"
        # Running on GATEWAY, set by a statement nobody announces: from here on, a row of the bot is news.
        await heartbeat(management)
        await set_bot(management, bot_id, desired_state="running", actual_state="running", gateway_id=GATEWAY)
        paused = await management.client.post(f"/api/v1/bots/{bot_id}/pause", headers=admin)
        assert paused.status_code == 200, paused.text
        assert (await next_row_of(page, bot_id))["desired_state"] == "paused"
        await reconciler(management).pass_once(datetime.now(UTC) + timedelta(seconds=45))
        assert (await next_row_of(page, bot_id))["actual_state"] == "unknown"
