"""The README's "Your first bot", run as written: its curl commands, in order, through bash.

The commands are read from the README itself (up to the marker that says so), so the test fails when the
README stops working. Only what a reader would fill in is filled in: the URLs point at this stack's ports
instead of 8000/8001/8002, ``TOKEN`` holds the admin's access token, and ``STRATEGY_ID=<STRATEGY_ID>`` takes
the id the previous command printed. Where the README shows an answer (``# {...}``), the answer must carry
those values (``<PLACEHOLDERS>`` match any value, ``[...]`` any list with items, ``{...}`` any object;
measured numbers are not compared). Where the README says to wait (the bot starting, a trade a minute after
the market's push), the test waits, with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, ROOT, Stack, alive, bearer, gateway_bots, get_bot, login, wait_bot, wait_status
from tests.helpers import async_wait_for

pytestmark = pytest.mark.slow

SECTION = "## Your first bot"
END = "<!-- tests/e2e/test_readme.py runs every command of this section above this line, as written. -->"
READER = "reader@e2e.example.com"
DEFAULT_PORTS = {"8000": "management", "8001": "gateway", "8002": "simulator"}


@dataclass(frozen=True)
class Step:
    kind: Literal["run", "set", "fill", "expect"]
    text: str
    name: str = ""


def walkthrough() -> list[Step]:
    """The section's shell lines up to the END marker, in order: commands, variables set, placeholders to
    fill, answers shown."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    assert END in section, f"the README's {SECTION!r} section lost its marker {END!r}"
    section = section.split(END, 1)[0]
    steps: list[Step] = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.strip()
            if line.startswith(("# {", "# [")):
                steps.append(Step("expect", line[2:]))
            elif not line or line.startswith("#"):
                continue
            elif fill := re.fullmatch(r"([A-Z_]+)=<([A-Z_]+)>", line):
                steps.append(Step("fill", line, fill.group(1)))
            elif assignment := re.fullmatch(r"([A-Z_]+)=(\S+)", line):
                steps.append(Step("set", assignment.group(2), assignment.group(1)))
            else:
                steps.append(Step("run", line))
    return steps


def shown(text: str) -> Any:
    """An answer as the README shows it, as JSON: ``[...]`` stands for a list with items, ``{...}`` for an
    object, a trailing ``, ...`` for more fields."""
    text = text.replace("[...]", '"<list>"').replace("{...}", '"<object>"')
    text = re.sub(r",\s*\.\.\.\s*([}\]])", r"\1", text)
    return json.loads(text)


def mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from what the README shows (placeholders and measured numbers aside)."""
    if expected == "<list>":
        return [] if isinstance(actual, list) and actual else [f"{path}: expected a list with items, got {actual!r}"]
    if expected == "<object>":
        return [] if isinstance(actual, dict) else [f"{path}: expected an object, got {actual!r}"]
    if isinstance(expected, str) and re.fullmatch(r"<[A-Z_]+>", expected):
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or 'answer'}: expected an object, got {actual!r}"]
        found = [f"{path}.{k}: missing" for k in expected if k not in actual]
        return found + [m for k, v in expected.items() if k in actual for m in mismatches(v, actual[k], f"{path}.{k}")]
    if isinstance(expected, float):
        return [] if isinstance(actual, int | float) else [f"{path}: expected a number, got {actual!r}"]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


class Reader:
    """Runs the README's lines in bash, one by one, in the repository's folder, as a reader would."""

    def __init__(self, stack: Stack, token: str) -> None:
        self.urls = {"management": stack.management, "gateway": stack.gateway, "simulator": stack.simulator.url}
        env = {k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_")}
        # `python3` as in the README: the project's virtualenv has one even where the system has not.
        env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
        env["TOKEN"] = token
        self.env = env
        self.last: Any = None
        self.ran: list[str] = []

    def local(self, text: str) -> str:
        """The line with the README's default ports replaced by this stack's."""
        for port, service in DEFAULT_PORTS.items():
            text = text.replace(f"http://127.0.0.1:{port}", self.urls[service])
        return text

    def run(self, command: str) -> Any:
        result = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{self.local(command)}"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{command}\nexit {result.returncode}: {result.stderr}"
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"{command}\nanswered what is not JSON: {result.stdout[:500]!r}") from None
        assert not (isinstance(answer, dict) and "detail" in answer), f"{command}\nwas refused: {answer}"
        self.ran.append(command)
        self.last = answer
        return answer


async def test_the_readme_first_bot_walkthrough_works_as_written(client: httpx.AsyncClient, stack: Stack) -> None:
    assert shutil.which("curl"), "the README's walkthrough uses curl"
    # The reader is an admin of their own, so that "mine" at the end means the README's bot only.
    made = await client.post(
        "/users", json={"email": READER, "password": PASSWORD, "role": "admin"}, headers=bearer(stack.admin_token)
    )
    assert made.status_code == 201, made.text
    token = login(stack, READER, PASSWORD)
    admin = bearer(token)
    reader = Reader(stack, token)
    steps = walkthrough()
    assert [s.name for s in steps if s.kind == "fill"] == ["STRATEGY_ID", "BOT_ID"]
    assert sum(s.kind == "expect" for s in steps) == 3  # the answers the README shows, each checked below

    pid: int | None = None
    for step in steps:
        if step.kind == "set":
            reader.env[step.name] = reader.local(step.text)
        elif step.kind == "fill":
            reader.env[step.name] = reader.last["id"]
        elif step.kind == "expect":
            problems = mismatches(shown(step.text), reader.last)
            assert not problems, f"{reader.ran[-1]}\nanswered {reader.last}\nnot as the README shows: {problems}"
        else:
            reader.run(step.text)
            bot_id = reader.env.get("BOT_ID")
            if re.search(r"/bots/\$BOT_ID/start\b", step.text):
                # "Within a few seconds ... reads running"
                await wait_bot(client, admin, bot_id, "running")
                pid = (await gateway_bots(stack))[bot_id]["pid"]
            elif "/_sim/shock" in step.text:
                # "... the bot buys when that candle closes" (the next minute at the latest)
                await wait_status(client, admin, bot_id, "running", open_trades=True, timeout=90)

    assert [c.split("$API", 1)[-1].split()[0] for c in reader.ran if "$API" in c] == [
        "/strategies",
        "/bots",
        "/bots/$BOT_ID/start",
        "/bots/$BOT_ID/status",
        "/bots/$BOT_ID/pause",
        "/bots/$BOT_ID/resume",
        "/bots/$BOT_ID/forceexit",
        "/bots/$BOT_ID/trades",
        "/bots/$BOT_ID/stop",
        "/emergency-stop",
    ]
    bot_id = reader.env["BOT_ID"]
    strategy_id = reader.env["STRATEGY_ID"]

    # The last command, the emergency stop of the admin's own bots, found first-bot stopped: halted now.
    assert reader.last["completed"] is True
    assert [(r["bot_id"], r["outcome"]) for r in reader.last["results"]] == [(bot_id, "halted")]
    bot = await get_bot(client, admin, bot_id)
    assert (bot["name"], bot["desired_state"], bot["actual_state"]) == ("first-bot", "halted", "halted")
    assert pid is not None
    assert not alive(pid)

    # The open trade (the push's, or one the bot found at start) was closed by the forceexit, and is listed.
    async def force_exited() -> list[dict[str, Any]] | None:
        listed: list[dict[str, Any]] = (await client.get(f"/bots/{bot_id}/trades", headers=admin)).json()
        closed = [t for t in listed if t["exit_reason"] == "force_exit"]
        return closed or None

    [trade, *_] = await async_wait_for(force_exited, timeout=30, what="the forced exit listed")
    assert trade["is_open"] is False
    assert trade["close_rate"] is not None

    # The Celery worker backtested the example strategy on the simulator ("check_status": "queued" above).
    async def checked() -> dict[str, Any] | None:
        strategy: dict[str, Any] = (await client.get(f"/strategies/{strategy_id}", headers=admin)).json()
        return strategy if strategy["check_status"] not in ("queued", "running") else None

    strategy = await async_wait_for(checked, timeout=180, interval=1, what="the strategy check")
    assert strategy["check_status"] == "passed", strategy["check_result"]
    assert strategy["owner_id"] == bot["owner_id"]
    me = (await client.get("/users/me", headers=admin)).json()
    assert (me["email"], me["id"]) == (READER, bot["owner_id"])
