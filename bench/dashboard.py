"""The dashboard's fleet page with 200 bots in headless Chromium, and what a pushed update costs the server.

Everything is real: an embedded PostgreSQL (migrated to head) and Valkey in a temporary folder, the management
server as ``freqfleet management`` builds it (``bench._auth_server management``, production settings, JSON logs to a
file), Debian's Chromium driven by Playwright. One user with 200 bots, each with a last report (two open trades,
profit and drawdown), as a gateway would leave them.

Measured, in rounds (medians):

- **first render**: a new browser context (empty cache) holding the user's session cookie opens ``/``: from the
  navigation's start until the fleet table has its 200 rows (the page asks for an access token with the cookie,
  reads ``/api/v1/dashboard/fleet`` and draws); **live**: until its live feed said ``ready``; **bytes**: what
  crossed the network for that load (the navigation and every resource, compressed as sent; the open event stream
  is not counted);
- baseline: the same browser opening ``/health/live`` (a small JSON answer of the same server), same round;
- **pushed updates**: with the page and 20 more listeners on the live feed, 500 changes of single bots are
  announced on the feed's Redis channel (as the process applying gateways' reports does); the server's CPU per
  change (reading the bot's row once and pushing it to every page that may see it), against the same server idle
  over the same time, and how long a change takes to show in the page.

    python -m bench.run dashboard          (or: python -m bench.dashboard [--quick])
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from bench._common import AuthServer, BenchError, login_over_http, running, server_env
from bench._servers import run_on_servers
from bench.api import prepare
from bench.auth import EMAIL, setup
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from management_server.bots.models import Bot
from management_server.dashboard.live import CHANNEL
from shared.redis import create_redis

BOTS = 200
LISTENERS = 20
CHANGES = 500
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
STATUS = {
    "state": "running",
    "open_trades": [{"trade_id": 1, "pair": "BTC/USDT"}, {"trade_id": 2, "pair": "ETH/USDT"}],
    "profit": {"profit_all_coin": 12.5, "profit_all_ratio": 0.0125, "max_drawdown": 0.021, "max_drawdown_abs": 3.2,
               "closed_trade_count": 40},
}  # fmt: skip


async def make_bots(port: int, token: str, strategy_id: str) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    ids = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for i in range(BOTS):
            body = {"name": f"bot-{i:03d}", "strategy_id": strategy_id, "pairs": ["BTC/USDT", "ETH/USDT"],
                    "timeframe": "5m", "stake_amount": "10", "max_open_trades": 2}  # fmt: skip
            created = await client.post("/api/v1/bots", json=body, headers=headers)
            if created.status_code != 201:
                raise BenchError(f"creating a bot: {created.status_code} {created.text[:200]}")
            ids.append(created.json()["id"])
    return ids


async def listener(port: int, token: str, seen: list[int], ready: asyncio.Event) -> None:
    """One more page on the live feed (without a browser): counts the bot events it gets."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10, read=120)) as client,
        client.stream("GET", "/api/v1/dashboard/live", headers=headers) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("event: ready"):
                ready.set()
            elif line.startswith("event: bot"):
                seen[0] += 1


async def session_cookies(base: str, email: str, password: str) -> list[dict[str, Any]]:
    """A new dashboard session's cookies (each page load gets its own: a refresh token works once)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        started = await client.post("/api/v1/auth/session", data={"username": email, "password": password})
        if started.status_code != 200:
            raise BenchError(f"logging in: {started.status_code} {started.text[:200]}")
        jar = client.cookies.jar
    return [
        {"name": c.name, "value": c.value or "", "domain": "127.0.0.1", "path": c.path,
         "httpOnly": c.name.endswith("refresh"), "sameSite": "Strict"}
        for c in jar
    ]  # fmt: skip


async def page_load(browser: Any, cookies: list[dict[str, Any]], url: str) -> dict[str, float]:
    context = await browser.new_context()  # a new cache: only the session's cookies
    await context.add_cookies(cookies)
    page = await context.new_page()
    try:
        await page.goto(url)
        rendered = await page.wait_for_function(
            f"() => document.querySelectorAll('#fleet-rows tr[data-bot]').length === {BOTS} && performance.now()",
            timeout=30_000,
        )
        live = await page.wait_for_function(
            "() => document.body.dataset.live === 'ready' && performance.now()", timeout=30_000
        )
        transferred = await page.evaluate(
            "() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".reduce((sum, e) => sum + (e.transferSize || 0), 0)"
        )
        return {"render": await rendered.json_value(), "live": await live.json_value(), "bytes": transferred}
    finally:
        await context.close()


async def baseline_load(browser: Any, url: str) -> float:
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(url)
        loaded: float = await page.evaluate("() => performance.getEntriesByType('navigation')[0].responseEnd")
        return loaded
    finally:
        await context.close()


async def bench(quick: bool, workdir: Path, pg: EmbeddedPostgres, valkey: EmbeddedValkey) -> None:
    from playwright.async_api import async_playwright

    rounds = 2 if quick else 7
    ctx, close = await setup(workdir, pg.url(), valkey.url)
    redis = create_redis(valkey.url)
    try:
        strategy_id = await prepare(ctx)
        server = AuthServer("management", workdir, server_env(workdir, pg.url(), valkey.url))
        async with running([server]):
            base = f"http://127.0.0.1:{server.port}"
            token = await login_over_http(server.port, EMAIL, ctx.password)
            bot_ids = await make_bots(server.port, token, strategy_id)
            async with ctx.sessionmaker.begin() as session:  # as the gateway's reports leave them
                await session.execute(update(Bot).values(last_status=STATUS, actual_state="running"))
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                login = await browser.new_context()
                page = await login.new_page()
                await page.goto(base + "/")
                await page.fill("#login input[name=email]", EMAIL)
                await page.fill("#login input[name=password]", ctx.password)
                await page.click("#login button[type=submit]")
                await page.wait_for_selector("#fleet-rows tr[data-bot]")
                loads, bares = [], []
                for _ in range(rounds):
                    cookies = await session_cookies(base, EMAIL, ctx.password)
                    loads.append(await page_load(browser, cookies, base + "/"))
                    bares.append(await baseline_load(browser, base + "/health/live"))

                # Pushed updates: the logged-in page and LISTENERS more, CHANGES announced one bot at a time.
                await page.wait_for_function("() => document.body.dataset.live === 'ready'")
                seen = [0]
                readies = [asyncio.Event() for _ in range(LISTENERS)]
                tasks = [asyncio.create_task(listener(server.port, token, seen, r)) for r in readies]
                await asyncio.gather(*(r.wait() for r in readies))
                idle_started, cpu = time.perf_counter(), server.cpu_seconds()
                await asyncio.sleep(5 if quick else 10)
                idle = (server.cpu_seconds() - cpu) / (time.perf_counter() - idle_started)
                changes = CHANGES // 5 if quick else CHANGES
                cpu, started = server.cpu_seconds(), time.perf_counter()
                delays = []
                for i in range(changes):
                    bot_id = bot_ids[i % BOTS]
                    timed = i % 25 == 0  # how long until the page shows it (its rows redrawn from the pushed one)
                    if timed:
                        await page.evaluate(
                            "() => { window.__seen = false; const t = document.querySelector('#fleet-rows');"
                            "new MutationObserver((m, o) => { window.__seen = true; o.disconnect(); })"
                            ".observe(t, { childList: true, subtree: true }); }"
                        )
                    announced = time.perf_counter()
                    await redis.publish(CHANNEL, json.dumps({bot_id: str(ctx.user.id)}))
                    if timed:
                        await page.wait_for_function("() => window.__seen === true", timeout=10_000)
                        delays.append((time.perf_counter() - announced) * 1000)
                    else:
                        await asyncio.sleep(0.02)
                deadline = time.monotonic() + 30
                while seen[0] < changes * LISTENERS and time.monotonic() < deadline:  # noqa: ASYNC110 - a poll
                    await asyncio.sleep(0.1)
                elapsed = time.perf_counter() - started
                spent = server.cpu_seconds() - cpu - idle * elapsed
                for task in tasks:
                    task.cancel()
                await browser.close()
    finally:
        await redis.aclose()
        await close()
    print(report(loads, bares, seen[0], changes, spent, delays), flush=True)


def report(
    loads: list[dict[str, float]], bares: list[float], seen: int, changes: int, spent: float, delays: list[float]
) -> str:
    render = statistics.median(x["render"] for x in loads)
    live = statistics.median(x["live"] for x in loads)
    transferred = statistics.median(x["bytes"] for x in loads)
    bare = statistics.median(bares)
    pages = LISTENERS + 1
    return "\n".join(
        [
            f"Dashboard: the fleet page with {BOTS} bots in headless Chromium ({len(loads)} loads, medians)",
            f"  first render (200 rows drawn)   {render:8.0f} ms   ({render / bare:5.1f}x the bare /health/live load,"
            f" {bare:.0f} ms)",
            f"  live (the feed said ready)      {live:8.0f} ms",
            f"  transferred for the first load  {transferred / 1024:8.1f} KB (as sent, compressed where it was)",
            f"  pushed updates: {changes} changes x {pages} pages, {seen} events reached the {LISTENERS} listeners",
            f"  server CPU per change           {spent / changes * 1e6:8.0f} us (its idle CPU over the same time"
            " taken off), "
            f"{spent / max(1, changes * pages) * 1e6:.0f} us per page and change",
            f"  a change to the page's row      {statistics.median(delays):8.1f} ms median,"
            f" {max(delays):.1f} ms max ({len(delays)} timed)",
        ]
    )


def run(quick: bool = False) -> None:
    if not Path(CHROMIUM).exists():
        raise BenchError("no /usr/bin/chromium: apt-get install chromium")
    run_on_servers("dashboard", lambda workdir, pg, valkey: bench(quick, workdir, pg, valkey))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
