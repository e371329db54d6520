"""A hostile strategy in a real bot: it passes the lint, runs in Freqtrade, and reaches nothing but its own
folder and its exchange — no key, no other bot's config, no parent's environment, no Valkey — while the bot
still trades on the simulator."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from management_server.strategies.validation import validate_strategy
from shared.bus.messages import BotStarted, BotStatus, CommandAccepted
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from tests.hostile import hostile_source, read_probe
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET
from tests.trading_gateway.fleet.conftest import Bus, Tokens, bots_root, running_gateway, settings_for, spec_for, start
from trading_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow


async def test_a_hostile_strategy_reaches_nothing_but_its_own_bot(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens)
    cleanup.append(settings)
    secret = tmp_path / "master.keys"
    secret.write_text("k1:TOPSECRETMASTERKEY\n")
    secret.chmod(0o600)
    other = bots_root(settings) / "other-bot"
    other.mkdir(parents=True, mode=0o700)
    (other / "config.json").write_text("OTHERBOTSPASSWORD\n")
    outside = tmp_path / "pwned.csv"
    valkey = urlsplit(redis_url)
    source = hostile_source(
        ALWAYS_ENTER_MARKET,
        read={
            "master_keys": str(secret),
            "other_bot_config": str(other / "config.json"),
            "gateway_state": str(settings.gateway_data_dir / "state.json"),
            "valkey": f"http://{valkey.hostname}:{valkey.port}/",
        },
        write={"outside": str(outside), "own_folder": "mine.csv"},
    )
    assert validate_strategy(source).ok, validate_strategy(source).problems  # the lint lets it through

    bus = bus_factory(settings.gateway_id)
    bot_id = uuid.uuid4()
    async with running_gateway(settings):
        command = await bus.send(start(bot_id, 1, spec_for(strategy_source=source)))
        assert isinstance(await bus.answer(command), CommandAccepted)
        started = await bus.wait(BotStarted, bot_id=bot_id)
        folder = bots_root(settings) / str(bot_id)

        async def reported() -> bool:
            return (folder / "probe.json").is_file()

        await async_wait_for(reported, timeout=30, what="the probe's report")
        report = read_probe(folder)

        for name in ("master_keys", "other_bot_config", "gateway_state", "parent_environ", "outside", "valkey"):
            assert report[name].startswith("denied: "), (name, report[name])
        assert "Permission denied" in report["valkey"] or "Errno 13" in report["valkey"], report["valkey"]
        assert report["own_folder"].startswith("GOT: "), report["own_folder"]
        assert not outside.exists()

        bot = psutil.Process(started.data.pid)
        if os.geteuid() == 0:  # an uid of its own, none of root's powers
            assert bot.uids().real != 0
            assert bot.uids().effective != 0
            assert (folder / "config.json").stat().st_uid == bot.uids().real
            assert (folder / "config.json").stat().st_mode & 0o777 == 0o600
        status = await asyncio.to_thread(Path(f"/proc/{bot.pid}/status").read_text)
        assert "NoNewPrivs:\t1" in status
        # ... and it still trades.
        await bus.wait(BotStatus, lambda e: len(e.data.open_trades) == 1, bot_id=bot_id)
