"""The README's "Your first bot" with `freqfleet` commands only, against the running stack: log in, upload the
example strategy, create a bot, start it, read its log, pause, resume, stop, and the emergency stop; every refusal
one line on stderr, never a traceback. As a user of its own (its logout ends every token of that user: not the
admin's the other end-to-end tests use); the admin approves the strategy over the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, ROOT, Stack, bearer, register
from tests.helpers import async_wait_for

pytestmark = pytest.mark.slow


def cli(config: Path, url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_")}
    env |= {"XDG_CONFIG_HOME": str(config), "FREQFLEET_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "freqfleet", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, no traceback
    return done.stderr.strip()


async def test_your_first_bot_from_the_command_line(stack: Stack, client: httpx.AsyncClient, tmp_path: Path) -> None:
    url = stack.management
    email = "cli@e2e.example.com"
    await register(client, email)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return cli(tmp_path, url, *args, stdin=stdin)

    assert refused(run("bots", "list")) == f"bots list: not logged in to {url}: run `freqfleet login --url {url}`"
    wrong = refused(run("login", "--email", email, "--password-stdin", stdin="not the password\n"))
    assert wrong.startswith("login: login refused (401)")
    assert "logged in to" in ok(run("login", "--email", email, "--password-stdin", stdin=PASSWORD + "\n"))
    stored = tmp_path / "freqfleet" / "credentials.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in stored.read_text()

    strategy = json.loads(ok(run("strategies", "upload", "examples/strategies/GreenCandle.py", "--json")))
    assert (strategy["class_name"], strategy["status"]) == ("GreenCandle", "pending_review")
    assert "approve" in refused(run("strategies", "approve", "GreenCandle"))  # admins only
    approved = await client.post(f"/strategies/{strategy['id']}/approve", headers=bearer(stack.admin_token))
    assert approved.status_code == 200, approved.text
    assert "approved" in ok(run("strategies", "list"))
    created = ok(
        run(
            "bots", "create", "cli-bot", "--strategy", "GreenCandle", "--pair", "BTC/USDT", "--pair", "ETH/USDT",
            "--timeframe", "1m", "--stake", "100", "--max-open-trades", "2",
        )
    )  # fmt: skip
    assert "cli-bot" in created
    too_much = refused(
        run("bots", "create", "greedy", "--strategy", "GreenCandle", "--pair", "BTC/USDT", "--stake", "1000000")
    )
    assert "more than the default dry-run wallet" in too_much
    foo = refused(run("bots", "create", "foo", "--strategy", "GreenCandle", "--pair", "FOO/USDT"))
    assert foo.startswith("bots create: POST /bots refused (400): FOO/USDT not traded on simulator: it trades ")
    assert "BTC/USDT" in foo  # the simulator's own list, as its exchangeInfo gives it
    assert "cli-bot: start sent" in ok(run("bots", "start", "cli-bot"))

    async def running() -> dict[str, Any] | None:
        shown = json.loads(ok(run("bots", "show", "cli-bot", "--json")))
        return shown if shown["bot"]["actual_state"] == "running" and shown["status"]["state"] == "running" else None

    shown = await async_wait_for(running, timeout=90, interval=1, what="the bot to run")
    assert shown["bot"]["gateway_id"] == stack.gateway_id
    listed = ok(run("bots", "list"))
    assert "cli-bot" in listed
    assert "running" in listed
    log = ok(run("bots", "logs", "cli-bot", "-n", "20"))
    assert 0 < len(log.splitlines()) <= 20

    assert "pause sent" in ok(run("bots", "pause", "cli-bot"))
    assert "resume sent" in ok(run("bots", "resume", "cli-bot"))
    assert "stop sent" in ok(run("bots", "stop", "cli-bot"))
    pin = refused(run("bots", "pin", "cli-bot", stack.gateway_id))  # where a bot runs is an admin's choice
    assert pin.startswith("bots pin: PATCH /bots/")
    assert "Only an admin may pin a bot to a gateway" in pin
    assert (
        refused(run("bots", "start", "no-such-bot"))
        == "bots start: no bot 'no-such-bot' (`freqfleet bots list` lists them)"
    )

    halted = json.loads(ok(run("emergency-stop", "--json", "--reason", "cli test")))
    assert halted["completed"] is True
    assert "logged out" in ok(run("logout"))
    assert refused(run("bots", "list")).startswith("bots list: not logged in")
    away = cli(tmp_path, "http://127.0.0.1:9", "bots", "list")
    assert "does not answer" in refused(away) or "not logged in" in refused(away)
