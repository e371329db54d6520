"""A gateway whose fork launcher can't start still starts its bots: exec'd, said in their BOT_STARTED and on its
``GET /api/v1/bots``, the reason in its log; and it does not try again for every bot."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from shared.bus.messages import BotStarted, CommandAccepted
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.trading_gateway.conftest import Bus, Tokens, bearer, running_gateway, settings_for, spec_for, start
from trading_gateway.bots.launcher import launcher_folder
from trading_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow


async def test_bots_are_execd_when_the_launcher_cannot_start(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens, bot_launcher="fork")
    cleanup.append(settings)
    # Where the launcher keeps its log and exits is taken by a file (a broken disk, a hand's mistake): it can't start.
    folder = launcher_folder(settings.gateway_data_dir)
    folder.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    folder.write_text("not a folder\n")

    bus = bus_factory(settings.gateway_id)
    bots = [uuid.uuid4(), uuid.uuid4()]
    async with running_gateway(settings) as gateway:
        for bot_id in bots:
            command = await bus.send(start(bot_id, 1, spec_for()))
            assert isinstance(await bus.answer(command), CommandAccepted)
        started = [await bus.wait(BotStarted, bot_id=bot_id) for bot_id in bots]
        assert [s.data.launcher for s in started] == ["exec", "exec"]
        for s in started:  # exec'd: children of the gateway (this process), not of a launcher
            assert psutil.Process(s.data.pid).ppid() == psutil.Process().pid

        listed = await gateway.http.get("/api/v1/bots", headers=bearer(tokens.mint("admin")))
        assert listed.status_code == 200, listed.text
        assert {b["launcher"] for b in listed.json()["bots"]} == {"exec"}

    said = caplog.text
    assert said.count("bot launcher did not start; bots are exec'd") == 1, said[-3000:]  # tried once, not per bot
    assert "FileExistsError" in said or "File exists" in said or "Not a directory" in said, said[-3000:]
