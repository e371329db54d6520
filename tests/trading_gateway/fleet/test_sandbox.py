"""A hostile strategy in a real bot: it passes the lint, runs in Freqtrade, and reaches nothing but its own
folder and its exchange — no key, no other bot's config, no parent's environment, no Valkey — while the bot
still trades on the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from management_server.strategies.validation import validate_strategy
from shared.bus.messages import BotStarted, BotStatus, CommandAccepted
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, free_port
from tests.hostile import hostile_source, read_probe
from tests.non_root import NON_ROOT_UID, as_user
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET
from tests.trading_gateway.conftest import Bus, Tokens, bots_root, running_gateway, settings_for, spec_for, start
from trading_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow


LAUNCHERS = pytest.mark.parametrize("launcher", ["fork", "exec"])  # isolated alike, however the bot started


@LAUNCHERS
async def test_a_hostile_strategy_reaches_nothing_but_its_own_bot(
    launcher: str,
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens).model_copy(update={"bot_launcher": launcher})
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
        assert started.data.launcher == launcher
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
        # Behind the services for the CPU: its nice, and its session's (with the kernel's autogroups on).
        assert os.getpriority(os.PRIO_PROCESS, bot.pid) == 10
        autogroups = await asyncio.to_thread(Path("/proc/sys/kernel/sched_autogroup_enabled").read_text)
        if autogroups.strip() == "1":
            autogroup = await asyncio.to_thread(Path(f"/proc/{bot.pid}/autogroup").read_text)
            assert autogroup.split()[-2:] == ["nice", "10"]
        # ... and it still trades.
        await bus.wait(BotStatus, lambda e: len(e.data.open_trades) == 1, bot_id=bot_id)


@LAUNCHERS
async def test_under_a_non_root_gateway_landlock_alone_keeps_a_hostile_bot_in(
    launcher: str,
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    """The gateway run by a user that is not root: its bots run as that same user, so only Landlock keeps a
    bot from the user's other files — its keys, another bot's config, the gateway's own environment."""
    if os.geteuid() != 0:
        pytest.skip("the test makes its non-root user as root")
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, NON_ROOT_UID, NON_ROOT_UID)
    port_start = random.randrange(20_000, 60_000, 100)
    gateway_id = f"gw-nonroot-{uuid.uuid4().hex[:8]}"
    settings = GatewaySettings(data_dir=data, gateway_id=gateway_id)  # where its bots live, for the cleanup
    cleanup.append(settings)
    secret = data / "master.keys"  # the user's own file: only Landlock is in the way
    secret.write_text("k1:TOPSECRETMASTERKEY\n")
    secret.chmod(0o600)
    os.chown(secret, NON_ROOT_UID, NON_ROOT_UID)
    valkey = urlsplit(redis_url)
    source = hostile_source(
        ALWAYS_ENTER_MARKET,
        read={
            "master_keys": str(secret),
            "gateway_state": str(settings.gateway_data_dir / "state.json"),
            "valkey": f"http://{valkey.hostname}:{valkey.port}/",
        },
        write={"outside": str(data / "pwned.csv"), "own_folder": "mine.csv"},
    )
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "FREQFLEET_ENV": "test",
        "FREQFLEET_DATA_DIR": str(data),
        "FREQFLEET_REDIS_URL": redis_url,
        "FREQFLEET_GATEWAY_ID": gateway_id,
        "FREQFLEET_GATEWAY_PORT": str(free_port()),
        "FREQFLEET_MANAGEMENT_URL": tokens.jwks_url,  # the stand-in publishes the keys that sign commands
        "FREQFLEET_SIMULATOR_URL": simulator.url,
        "FREQFLEET_BOT_PORT_RANGE_START": str(port_start),
        "FREQFLEET_BOT_PORT_RANGE_END": str(port_start + 9),
        "FREQFLEET_STATUS_INTERVAL": "0.5",
        "FREQFLEET_BOT_PROCESS_THROTTLE_SECS": "1",
        "FREQFLEET_STOP_BOTS_ON_SHUTDOWN": "true",
        "FREQFLEET_LOG_FORMAT": "json",
        "FREQFLEET_BOT_LAUNCHER": launcher,
    }
    log_path = tmp_path / "gateway.log"
    bus = bus_factory(gateway_id)
    bot_id = uuid.uuid4()
    gateway = _spawn(as_user([sys.executable, "-m", "freqfleet", "gateway"], show=[str(data)]), env, log_path)
    try:
        command = await bus.send(start(bot_id, 1, spec_for(strategy_source=source)))
        answer = await bus.answer(command, timeout=60)
        assert isinstance(answer, CommandAccepted), (answer, log_path.read_text()[-3000:])
        started = await bus.wait(BotStarted, bot_id=bot_id, timeout=90)
        assert started.data.launcher == launcher
        folder = settings.gateway_data_dir / "bots" / str(bot_id)

        async def reported() -> bool:
            return (folder / "probe.json").is_file()

        await async_wait_for(reported, timeout=30, what="the probe's report")
        report = read_probe(folder)
        for name in ("master_keys", "gateway_state", "parent_environ", "outside", "valkey"):
            assert report[name].startswith("denied: "), (name, report[name])
        assert report["own_folder"].startswith("GOT: "), report["own_folder"]
        assert psutil.Process(started.data.pid).uids().real == NON_ROOT_UID
        said = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        assert any(line.get("event") == "sandbox for user code" and line.get("mode") == "landlock" for line in said)
        await bus.wait(BotStatus, lambda e: len(e.data.open_trades) == 1, bot_id=bot_id)  # and it trades
    finally:
        await asyncio.to_thread(_stop, gateway)


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
