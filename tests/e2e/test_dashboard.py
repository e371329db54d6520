"""The dashboard in a real browser (Playwright driving Debian's Chromium) against the real stack: the management
server in two worker processes, the gateway with real Freqtrade bots on the simulator, the worker.

Screenshots of the fleet, bot and models pages are written to ``FREQFLEET_SCREENSHOTS`` when it is set (the README's
pictures come from ``FREQFLEET_SCREENSHOTS=docs/screenshots``), else to the test's temporary folder.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import PASSWORD, WAIT, Page, Stack, register
from tests.e2e.test_bots import approved_bot, trades

pytestmark = pytest.mark.slow


async def api_state(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str) -> str:
    state: str = (await client.get(f"/bots/{bot_id}", headers=headers)).json()["actual_state"]
    return state


async def test_a_trader_drives_a_bot_from_the_page_and_sees_it_live(
    page: Page, stack: Stack, client: httpx.AsyncClient, screenshots: Path
) -> None:
    trader = await register(client, "dash-trader@example.com")
    started = await approved_bot(client, stack, trader, "dash-api")
    assert (await client.post(f"/bots/{started}/start", headers=trader)).status_code == 200
    await page.log_in("dash-trader@example.com")
    p = page.page

    # The fleet shows the bot started through the API, and turns it running as its gateway reports: no reload.
    await p.wait_for_selector(f'#fleet-rows tr[data-bot="{started}"][data-state="running"]', timeout=WAIT)
    later = await approved_bot(client, stack, trader, "dash-page")  # made meanwhile: it appears by itself
    await p.wait_for_selector(f'#fleet-rows tr[data-bot="{later}"][data-state="stopped"]', timeout=WAIT)
    assert await p.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded

    # Its page: an action the bot can't take is refused with the reason; start from the button, see it running
    # (pushed), its trades open.
    await p.click(f'#fleet-rows tr[data-bot="{later}"] a.bot-name')
    await p.wait_for_selector("#bot-state", timeout=WAIT)
    await p.click('button[data-action="pause"]')
    refused = p.locator('#action-outcome[data-outcome="rejected"]')
    await refused.wait_for(timeout=WAIT)
    assert "start it first" in (await refused.text_content() or "")
    await p.click('button[data-action="start"]')
    await p.wait_for_selector('#action-outcome[data-outcome="accepted"]', timeout=WAIT)
    await p.wait_for_selector('#bot-state[data-state="running"]', timeout=WAIT)
    await p.wait_for_selector("#open-trades tr[data-trade]", timeout=WAIT)

    # Force-exit every open trade: the trades close, and the equity curve has one point per closed trade.
    await p.click('button[data-action="forceexit-all"]')
    await p.wait_for_selector('#action-outcome[data-outcome="accepted"]', timeout=WAIT)
    deadline = time.monotonic() + 60
    while not (closed := [t for t in await trades(client, trader, later) if not t["is_open"]]):
        assert time.monotonic() < deadline, "no trade closed after the force-exit"
        await p.wait_for_timeout(500)
    await p.wait_for_function(
        "n => Number(document.querySelector('#equity')?.dataset.points) >= n", arg=len(closed), timeout=WAIT
    )
    points = int(await p.get_attribute("#equity", "data-points") or 0)
    assert points == len([t for t in await trades(client, trader, later) if not t["is_open"]])
    await p.wait_for_selector("#equity canvas", timeout=WAIT)
    await page.shot("bot", screenshots)

    # Pause from the button: paused, pushed; the bot's log, followed, says it too.
    await p.click('button[data-action="pause"]')
    await p.wait_for_selector('#bot-state[data-state="paused"]', timeout=WAIT)
    assert await api_state(client, trader, later) == "paused"
    await p.wait_for_selector('#log-lines:has-text("to: PAUSED")', timeout=WAIT)

    # The fleet page, then the emergency stop of this bot from its page, with its outcome.
    await p.click("a.brand")
    await p.wait_for_selector(f'#fleet-rows tr[data-bot="{later}"]', timeout=WAIT)
    await page.shot("fleet", screenshots)
    # On a phone-sized screen the page fits its width (the table scrolls inside its own box).
    await p.set_viewport_size({"width": 390, "height": 844})
    assert await p.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    await page.shot("fleet-phone", screenshots)
    await p.set_viewport_size({"width": 1280, "height": 860})
    await p.goto(f"{stack.management}/#/bots/{later}")
    await p.wait_for_selector("#bot-state", timeout=WAIT)
    await p.click("#estop")
    await p.wait_for_selector("#estop-dialog[open]")
    await p.check('#estop-scopes input[value="these"]')
    await p.fill("#estop-form input[name=reason]", "dashboard test")
    await p.click("#estop-confirm")
    await p.wait_for_selector(f'#estop-result li[data-outcome="halted"]:has-text("{later}")', timeout=WAIT)
    assert await p.locator("#estop-result li").count() == 1  # only this bot
    assert await api_state(client, trader, later) == "halted"
    assert await api_state(client, trader, started) == "running"
    await client.post(f"/bots/{started}/stop", headers=trader)


async def test_a_user_sees_only_their_bots_and_a_name_is_text(
    page: Page, stack: Stack, client: httpx.AsyncClient
) -> None:
    owner = await register(client, "dash-owner@example.com")
    other = await register(client, "dash-other@example.com")
    hostile = await approved_bot(client, stack, owner, "dash-hostile")
    theirs = await approved_bot(client, stack, other, "dash-theirs")
    name = "<img src=x onerror=alert(1)>"  # the API refuses such a name; one written before the rule, or by hand
    connection = await asyncpg.connect(stack.database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await connection.execute("UPDATE bots SET name = $1 WHERE id = $2", name, hostile)
    finally:
        await connection.close()

    await page.log_in("dash-owner@example.com")
    p = page.page
    row = p.locator(f'#fleet-rows tr[data-bot="{hostile}"] a.bot-name')
    await row.wait_for(timeout=WAIT)
    assert await row.text_content() == name  # shown as the text it is
    assert await p.locator("img[src=x]").count() == 0
    assert await p.locator(f'#fleet-rows tr[data-bot="{theirs}"]').count() == 0  # another user's bot: not there
    assert sorted(await p.locator("#nav a").all_text_contents()) == ["Fleet", "Models", "Strategies"]
    await row.click()
    await p.wait_for_selector("#bot-state", timeout=WAIT)
    assert await p.text_content("h1") == name
    await p.goto(f"{stack.management}/#/audit")
    await p.wait_for_selector("text=No such page.")
    await p.goto(f"{stack.management}/#/bots/{theirs}")
    await p.wait_for_selector("text=No such bot.", timeout=WAIT)
    assert page.dialogs == []  # no alert ran


async def test_an_ended_session_lands_on_the_login_page_with_a_message(
    page: Page, stack: Stack, client: httpx.AsyncClient
) -> None:
    user = await register(client, "dash-session@example.com")
    await page.log_in("dash-session@example.com")
    p = page.page
    # A reload keeps the session (the refresh cookie buys a new access token).
    await p.reload()
    await p.wait_for_selector("#fleet", timeout=WAIT)
    cookies = {c["name"]: c for c in await p.context.cookies()}
    assert cookies["freqfleet_refresh"]["httpOnly"] is True
    assert cookies["freqfleet_refresh"]["sameSite"] == "Strict"
    assert "freqfleet_refresh" not in await p.evaluate("document.cookie")

    # The password changes elsewhere: every login of the user ends, this page's too.
    changed = await client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "another correct horse battery"},
        headers=user,
    )
    assert changed.status_code == 204, changed.text
    await p.goto(f"{stack.management}/#/strategies")
    await p.wait_for_selector("#login", timeout=WAIT)
    message = await p.text_content("#login-error")
    assert message is not None
    assert re.search("session has ended", message), message
