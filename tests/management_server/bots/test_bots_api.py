"""Strategies, credentials and bots through the real management server: ownership, review, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from management_server.config import ManagementSettings
from management_server.users.models import Role
from tests.exchange_simulator.conftest import sim_url  # noqa: F401 - a fixture: the module's simulator
from tests.management_server.conftest import Management, bearer

SOURCE = (Path(__file__).parents[2] / "exchange_simulator" / "strategies" / "AlwaysEnter.py").read_text()


@pytest.fixture
def management_settings(management_settings: ManagementSettings, sim_url: str) -> ManagementSettings:  # noqa: F811
    # The simulator's markets are known: a pair it does not trade is refused like any bad value.
    return management_settings.model_copy(update={"check_simulator_url": sim_url})


async def session_of(management: Management, email: str, role: Role = Role.user) -> dict[str, str]:
    await management.create_user(email, role=role)
    return bearer((await management.login(email))["access_token"])


async def upload(management: Management, headers: dict[str, str], name: str = "always", source: str = SOURCE) -> Any:
    return await management.client.post("/api/v1/strategies", json={"name": name, "source": source}, headers=headers)


def bot_body(strategy_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": "bot-1",
        "strategy_id": strategy_id,
        "pairs": ["BTC/USDT", "ETH/USDT"],
        "timeframe": "1m",
        "stake_amount": "10",
        "max_open_trades": 2,
    } | changes


async def test_a_users_strategy_waits_for_review_and_an_admins_does_not(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    mine = await upload(management, alice)
    assert mine.status_code == 201, mine.text
    assert mine.json()["status"] == "pending_review"
    assert mine.json()["class_name"] == "AlwaysEnter"
    assert (await upload(management, admin)).json()["status"] == "approved"

    listed = await management.client.get("/api/v1/strategies?status=pending_review", headers=admin)
    assert [s["id"] for s in listed.json()] == [mine.json()["id"]]
    not_yours = await management.client.post(f"/api/v1/strategies/{mine.json()['id']}/approve", headers=alice)
    assert not_yours.status_code == 403
    approved = await management.client.post(f"/api/v1/strategies/{mine.json()['id']}/approve", headers=admin)
    assert approved.json()["status"] == "approved"
    rejected = await management.client.post(
        f"/api/v1/strategies/{mine.json()['id']}/reject", json={"note": "too risky"}, headers=admin
    )
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["errors"] == [{"line": 0, "message": "too risky"}]
    assert {r.action for r in await management.audit() if r.action.startswith("strategy.")} == {
        "strategy.upload",
        "strategy.approve",
        "strategy.reject",
    }


async def test_a_bad_strategy_is_refused_with_its_line(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    response = await upload(management, alice, source="import os\n" + SOURCE)
    assert response.status_code == 400
    assert response.json()["errors"] == [{"line": 1, "message": "importing 'os' is not allowed in a strategy"}]
    assert response.json()["detail"] == "The strategy is refused: line 1: importing 'os' is not allowed in a strategy."
    broken = await upload(management, alice, source=SOURCE + "\ndef x(:\n")
    assert broken.json()["errors"][0]["message"].startswith("syntax error")
    assert (await management.client.get("/api/v1/strategies", headers=alice)).json() == []


async def test_users_see_only_their_own_strategies_and_bots(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    bob = await session_of(management, "bob@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, alice)).json()
    await management.client.post(f"/api/v1/strategies/{strategy['id']}/approve", headers=admin)
    bot = await management.client.post("/api/v1/bots", json=bot_body(strategy["id"]), headers=alice)
    assert bot.status_code == 201, bot.text
    body = bot.json()
    assert (body["desired_state"], body["actual_state"], body["generation"]) == ("stopped", "stopped", 0)
    assert body["exchange"] == "simulator"
    assert body["dry_run"] is True

    for path in (f"/api/v1/strategies/{strategy['id']}", f"/api/v1/bots/{body['id']}"):
        assert (await management.client.get(path, headers=bob)).status_code == 404
        assert (await management.client.get(path, headers=admin)).status_code == 200
    assert (await management.client.get("/api/v1/bots", headers=bob)).json() == []
    assert len((await management.client.get("/api/v1/bots", headers=admin)).json()) == 1
    stolen = await management.client.post("/api/v1/bots", json=bot_body(strategy["id"], name="b"), headers=bob)
    assert stolen.status_code == 404
    assert (await management.client.delete(f"/api/v1/bots/{body['id']}", headers=bob)).status_code == 404
    assert (
        await management.client.patch(f"/api/v1/bots/{body['id']}", json={"max_open_trades": 1}, headers=bob)
    ).status_code == 404


async def test_the_bot_list_is_the_bots_as_read_one_by_one_and_an_unchanged_one_is_a_304(
    management: Management,
) -> None:
    alice = await session_of(management, "alice@example.com")
    strategy = (await upload(management, alice)).json()["id"]
    for name in ("one", "two"):
        await management.client.post("/api/v1/bots", json=bot_body(strategy, name=name), headers=alice)
    listed = await management.client.get("/api/v1/bots", headers=alice)
    assert listed.headers["content-type"] == "application/json"
    bots = listed.json()
    assert [b["name"] for b in bots] == ["one", "two"]
    for bot in bots:  # the same fields and values as the bot's own answer
        assert (await management.client.get(f"/api/v1/bots/{bot['id']}", headers=alice)).json() == bot

    etag = listed.headers["etag"]
    again = await management.client.get("/api/v1/bots", headers=alice | {"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    await management.client.patch(f"/api/v1/bots/{bots[0]['id']}", json={"max_open_trades": 1}, headers=alice)
    changed = await management.client.get("/api/v1/bots", headers=alice | {"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()[0]["max_open_trades"] == 1


async def test_pages_follow_a_cursor_and_none_is_skipped_when_bots_come_and_go(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    strategy = (await upload(management, alice)).json()["id"]
    made = {}
    for name in ("a", "b", "c"):
        made[name] = (
            await management.client.post("/api/v1/bots", json=bot_body(strategy, name=name), headers=alice)
        ).json()
    first = await management.client.get("/api/v1/bots", params={"limit": 2}, headers=alice)
    assert [b["name"] for b in first.json()] == ["a", "b"]
    cursor = first.headers["x-next-cursor"]
    # Meanwhile the first bot goes and a new one comes: the next page still starts after "b".
    assert (await management.client.delete(f"/api/v1/bots/{made['a']['id']}", headers=alice)).status_code == 204
    await management.client.post("/api/v1/bots", json=bot_body(strategy, name="d"), headers=alice)
    second = await management.client.get("/api/v1/bots", params={"limit": 2, "cursor": cursor}, headers=alice)
    assert [b["name"] for b in second.json()] == ["c", "d"]
    last = await management.client.get(
        "/api/v1/bots", params={"limit": 2, "cursor": second.headers["x-next-cursor"]}, headers=alice
    )
    assert (last.json(), "x-next-cursor" in last.headers) == ([], False)  # a short page is the last one

    for params, words in (
        ({"cursor": "not-a-cursor"}, "cursor is not one this server gave"),
        ({"cursor": cursor, "offset": 1}, "Use cursor or offset, not both"),
    ):
        refused = await management.client.get("/api/v1/bots", params=params, headers=alice)
        assert refused.status_code == 422
        assert words in refused.json()["detail"]


async def test_bot_settings_are_validated(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, alice)).json()["id"]  # pending review: a bot can be made, not started
    cases = [
        (bot_body(strategy, pairs=["BTC/EUR"]), 400, "not quoted in the stake currency USDT"),
        (bot_body(strategy, timeframe="7m"), 422, "unknown timeframe"),
        (bot_body(strategy, stake_amount="0"), 422, "stake_amount must be above 0"),
        (bot_body(strategy, pairs=["BTC/USDT", "BTC/USDT"]), 422, "a pair is listed twice"),
        (bot_body(strategy, dry_run=False), 403, "Only an admin may create a live"),
    ]
    for body, code, message in cases:
        response = await management.client.post("/api/v1/bots", json=body, headers=alice)
        assert response.status_code == code, (body, response.text)
        assert message in response.text
    strategy = (await upload(management, admin)).json()["id"]
    live = await management.client.post(
        "/api/v1/bots", json=bot_body(strategy, dry_run=False, exchange="binance"), headers=admin
    )
    assert live.status_code == 400
    assert "needs credentials_id" in live.json()["detail"]
    ok = await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=admin)
    again = await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=admin)
    assert again.status_code == 409
    changed = await management.client.patch(
        f"/api/v1/bots/{ok.json()['id']}", json={"pairs": ["SOL/USDT"], "stake_amount": "unlimited"}, headers=admin
    )
    assert changed.json()["pairs"] == ["SOL/USDT"]
    assert changed.json()["stake_amount"] == "unlimited"


async def test_credentials_are_stored_encrypted_and_never_returned(management: Management) -> None:
    admin = await session_of(management, "root@example.com", Role.admin)
    created = await management.client.post(
        "/api/v1/credentials",
        json={"exchange": "binance", "label": "main", "key": "api-key-AAAA1111", "secret": "api-secret-BBBB2222"},
        headers=admin,
    )
    assert created.status_code == 201
    assert set(created.json()) == {"id", "exchange", "label", "created_at"}
    listed = await management.client.get("/api/v1/credentials", headers=admin)
    for response in (created, listed):
        assert "AAAA1111" not in response.text
        assert "BBBB2222" not in response.text
    async with management.app.state.sessionmaker() as session:
        blob = (await session.execute(text("SELECT ciphertext FROM exchange_credentials"))).scalar_one()
    assert b"AAAA1111" not in blob
    assert b"BBBB2222" not in blob
    from management_server.credentials.models import ExchangeCredential
    from management_server.credentials.service import reveal

    async with management.app.state.sessionmaker() as session:
        row = await session.get(ExchangeCredential, created.json()["id"])
        assert row is not None
        assert reveal(management.app.state.master_keys, row).secret.get_secret_value() == "api-secret-BBBB2222"
    strategy = (await upload(management, admin)).json()["id"]
    live = await management.client.post(
        "/api/v1/bots",
        json=bot_body(strategy, dry_run=False, exchange="binance", credentials_id=created.json()["id"]),
        headers=admin,
    )
    assert live.status_code == 201, live.text
    in_use = await management.client.delete(f"/api/v1/credentials/{created.json()['id']}", headers=admin)
    assert in_use.status_code == 409
    audit = "\n".join(repr((r.details, r.reason)) for r in await management.audit())
    assert "AAAA1111" not in audit
    assert "BBBB2222" not in audit


async def test_an_admins_token_without_the_admin_scope_acts_as_a_plain_users(management: Management) -> None:
    """Admin power is the role *and* the admin scope: an admin's read+trade personal access token uploads a
    strategy that waits for review, sees and stops only the admin's own bots, and can't halt the fleet."""
    alice = await session_of(management, "alice@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    made = await management.client.post(
        "/api/v1/users/me/tokens", json={"name": "agent", "scopes": ["read", "trade"]}, headers=admin
    )
    assert made.status_code == 201, made.text
    pat = bearer(made.json()["token"])
    strategy = (await upload(management, alice, "alices")).json()
    await management.client.post(f"/api/v1/strategies/{strategy['id']}/approve", headers=admin)
    alices_bot = (await management.client.post("/api/v1/bots", json=bot_body(strategy["id"]), headers=alice)).json()

    uploaded = (await upload(management, pat, "by-the-pat")).json()
    assert uploaded["status"] == "pending_review"  # not approved at once, as the admin's login would be
    assert (await management.client.get(f"/api/v1/bots/{alices_bot['id']}", headers=pat)).status_code == 404
    stopped = await management.client.post(f"/api/v1/bots/{alices_bot['id']}/stop", headers=pat)
    assert stopped.status_code == 404
    assert (await management.client.get("/api/v1/bots", headers=pat)).json() == []
    assert [s["name"] for s in (await management.client.get("/api/v1/strategies", headers=pat)).json()] == [
        "by-the-pat"
    ]
    halt = await management.client.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=pat)
    assert halt.status_code == 403
    live = await management.client.post(
        "/api/v1/bots", json=bot_body(strategy["id"], name="live", dry_run=False), headers=pat
    )
    assert live.status_code in (403, 404)  # alice's strategy is not the PAT's to see; never a live bot
    # The same admin's login token still has admin power.
    assert (await management.client.get(f"/api/v1/bots/{alices_bot['id']}", headers=admin)).status_code == 200


INVALID = [  # (field, value, status, words of the answer): refused alike by create and by PATCH
    ("stake_amount", "-5", 422, "stake_amount must be above 0"),
    ("stake_amount", "0", 422, "stake_amount must be above 0"),
    ("stake_amount", "NaN", 422, "Input should be a finite number"),
    ("stake_amount", "1e30", 422, "stake_amount must be at most 1,000,000,000,000"),
    ("stake_amount", "1000000", 400, "more than the default dry-run wallet (dry_run_wallet unset) of 1000 USDT"),
    ("pairs", ["BTC/EUR"], 400, "pairs BTC/EUR are not quoted in the stake currency USDT"),
    ("pairs", ["BTC/USDT", "BTC/USDT"], 422, "a pair is listed twice"),
    ("pairs", [], 422, "at least 1 item"),
    ("pairs", ["BTC/USDT", "FOO/USDT"], 400, "FOO/USDT not traded on simulator: it trades BTC/USDT, "),
    ("name", "\U0001f680 to the moon", 422, "a name may hold letters, digits, spaces, '.', '_' and '-' only"),
    ("name", "   ", 422, "a name needs a letter or a digit"),
    ("timeframe", "7m", 422, "unknown timeframe"),
    ("max_open_trades", 5000, 422, "less than or equal to 1000"),
    ("stoploss", 0.5, 422, "less than 0"),
]


def _said(answer: Any) -> str:
    detail = answer.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(p["msg"] for p in detail)


async def test_patch_refuses_what_create_refuses_with_the_same_words(management: Management) -> None:
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, admin)).json()["id"]
    bot = (await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=admin)).json()
    for field, value, status, words in INVALID:
        created = await management.client.post(
            "/api/v1/bots", json=bot_body(strategy, **({"name": "other"} | {field: value})), headers=admin
        )
        assert (created.status_code, words in _said(created)) == (status, True), (field, value, created.text)
        patched = await management.client.patch(f"/api/v1/bots/{bot['id']}", json={field: value}, headers=admin)
        assert (patched.status_code, words in _said(patched)) == (status, True), (field, value, patched.text)
    after = (await management.client.get(f"/api/v1/bots/{bot['id']}", headers=admin)).json()
    assert {k: after[k] for k in bot if k != "updated_at"} == {k: bot[k] for k in bot if k != "updated_at"}
    # A name is kept without the spaces around it.
    renamed = await management.client.patch(f"/api/v1/bots/{bot['id']}", json={"name": "  spaced out "}, headers=admin)
    assert renamed.json()["name"] == "spaced out"
