"""Real ``freqtrade trade`` processes on the exchange simulator: start, identity, trading, stop, death."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from shared.watchdog import now as watchdog_clock
from shared.watchdog import write_lease
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, free_port, until
from tests.trading_gateway.bots.conftest import GRACE, START_TIMEOUT, THROTTLE, make_spec, new_bot_id
from trading_gateway.bots.client import BotUnreachable, FreqtradeClient
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles, render_config
from trading_gateway.bots.launch import launch_bot
from trading_gateway.bots.ports import PortPool
from trading_gateway.bots.process import BotExitedEarly, BotPortConflict, BotProcess
from trading_gateway.bots.state import StateFile


def db_trades(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT id, pair, is_open, exit_reason FROM trades ORDER BY id")]


async def open_trades(api: FreqtradeClient, count: int = 1) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]]:
        trades = await api.status()
        return trades if len(trades) >= count else []

    return await async_wait_for(enough, timeout=30, interval=0.2, what=f"{count} open trade(s)")


@pytest.mark.slow
async def test_a_bot_starts_trades_and_stops_with_its_open_trade_kept(
    simulator: SimulatorProcess, bots_root: Path, pool: PortPool, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    state = StateFile(tmp_path / "bots-state.json")
    files = BotFiles(bots_root, new_bot_id())
    write_lease(files.lease, files.bot_id, watchdog_clock(), 3600.0)  # exec'd under the lease watchdog
    t0 = time.monotonic()
    launched = await launch_bot(
        make_spec(),
        files,
        pool,
        simulator_url=simulator.url,
        start_timeout=START_TIMEOUT,
        process_throttle_secs=THROTTLE,
        state=state,
        generation=4,
        watchdog=True,
    )
    process, ready = launched.process, launched.ready
    password = process.credentials.password
    try:
        assert (ready.freqtrade_version, ready.state) == ("2026.9", "running")
        assert process.is_alive()
        assert pool.holder(process.port) == files.bot_id
        record = state.get(files.bot_id)
        assert record is not None
        assert (record.pid, record.create_time, record.port) == (process.pid, process.create_time, process.port)
        assert (record.generation, record.freqtrade_version, record.config_path) == (4, "2026.9", str(files.config))
        proc = psutil.Process(process.pid)
        assert str(files.config) in proc.cmdline()
        assert proc.cmdline()[3:4] == ["shared.watchdog"]  # Freqtrade under the lease watchdog, in this very process
        assert os.getpgid(process.pid) == process.pid  # its own process group
        leaked = [k for k in proc.environ() if k.startswith(("FREQFLEET_", "PYTEST_")) or k in ("REDIS_URL",)]
        assert leaked == []

        async with process.client() as api:
            trades = await open_trades(api)
            to_trade = time.monotonic() - t0
            assert trades[0]["pair"] == "BTC/USDT"
            snapshot = await api.snapshot()
            assert snapshot.state == "running"
            assert [t["trade_id"] for t in snapshot.open_trades] == [trades[0]["trade_id"]]
            assert snapshot.profit["trade_count"] == 1
            assert snapshot.health.last_process is not None
            assert any("AlwaysEnter" in line.message or "heartbeat" in line.message for line in await api.logs(100))
            history = await api.trades()  # closed trades only
            assert history["total_trades"] == 0
        async with FreqtradeClient(process.port, process.credentials.username, "wrong") as stranger:
            with pytest.raises(Exception, match="credentials refused"):
                await stranger.status()

        stopped = await process.stop(GRACE)
        with capfd.disabled():
            print(f"\nspawn to ready {ready.seconds:.2f} s, to first open trade {to_trade:.2f} s; ", end="")
            print(f"stop {stopped.seconds:.2f} s ({stopped.signal}, exit code {stopped.exit_code})")
        assert stopped.was_running
        assert stopped.rest_stopped
        assert stopped.signal == "SIGTERM"  # a clean exit, no SIGKILL needed
        assert stopped.exit_code is not None
        assert not process.is_alive()
        assert not psutil.pid_exists(process.pid)
        async with process.client(timeout=1) as api:
            with pytest.raises(BotUnreachable):
                await api.ping()
        rows = db_trades(files.db)
        assert [(r["pair"], r["is_open"]) for r in rows] == [("BTC/USDT", 1)]  # open trades stay

        log_text = files.log.read_text()
        console = files.console_log.read_text()
        assert "Long signal found" in log_text
        assert "Long signal found" not in console  # Freqtrade's log is not duplicated to the console
        assert password not in log_text
        assert password not in console
        out, err = capfd.readouterr()
        assert password not in out + err  # never in our own logs
    finally:
        await process.terminate(grace=5)


@pytest.mark.slow
async def test_identity_a_foreign_api_a_reused_pid_and_kill_9(
    simulator: SimulatorProcess, bots_root: Path, pool: PortPool
) -> None:
    spec = make_spec()
    a = (
        await launch_bot(
            spec, BotFiles(bots_root, new_bot_id()), pool, simulator_url=simulator.url, start_timeout=START_TIMEOUT
        )
    ).process
    b: BotProcess | None = None
    try:
        # A second bot configured on A's port: A answers its /ping, but not its credentials.
        files_b = BotFiles(bots_root, new_bot_id())
        config_b = render_config(
            spec, files_b, port=a.port, credentials=ApiCredentials.generate(), simulator_url=simulator.url
        )
        files_b.write(config_b, spec.strategy_source)
        b = BotProcess.spawn(files_b, config_b)
        t0 = time.monotonic()
        with pytest.raises(BotPortConflict, match=f"port {a.port} is answered by another program"):
            await b.wait_ready(30)
        print(f"port conflict detected and the newcomer ended in {time.monotonic() - t0:.2f} s")
        assert not b.is_alive()
        assert a.is_alive()
        async with a.client() as api:
            assert (await api.show_config()).bot_name == a.bot_id

        # The same pid with another start time is not our bot: not alive, never signalled.
        impostor = BotProcess.attach(
            files=a.files, port=a.port, credentials=a.credentials, pid=a.pid, create_time=a.create_time + 5
        )
        assert not impostor.is_alive()
        assert not (await impostor.terminate(grace=1)).was_running
        assert a.is_alive()

        os.kill(a.pid, signal.SIGKILL)
        await until(lambda: not a.is_alive(), timeout=10, what="the killed bot to be seen dead")
        await until(lambda: a.exit_code is not None, timeout=10, what="the killed bot to be reaped")
        assert a.exit_code == -signal.SIGKILL
        assert not (await a.terminate(grace=1)).was_running
    finally:
        await a.terminate(grace=5)
        if b is not None:
            await b.terminate(grace=5)


@pytest.mark.slow
async def test_a_bot_whose_exchange_is_down_fails_with_its_log(bots_root: Path, pool: PortPool, tmp_path: Path) -> None:
    state = StateFile(tmp_path / "bots-state.json")
    files = BotFiles(bots_root, new_bot_id())
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BotExitedEarly) as caught:
        await launch_bot(make_spec(), files, pool, simulator_url=nowhere, start_timeout=START_TIMEOUT, state=state)
    error = caught.value
    assert error.exit_code == 2
    assert "freqtrade exited with code 2" in str(error)
    assert any("Could not load markets" in line for line in error.last_log_lines), error.last_log_lines
    assert pool.held == {}
    record = state.get(files.bot_id)
    assert record is not None
    assert (record.pid, record.port, record.password) == (None, None, None)
    assert record.last_exit_code == 2
    assert record.last_error == "freqtrade exited with code 2"
    assert len(record.crash_times) == 1


@pytest.mark.slow
async def test_a_port_taken_between_check_and_bind_is_retried_on_another(
    simulator: SimulatorProcess, bots_root: Path, pool: PortPool
) -> None:
    taken: list[int] = []
    squatter = socket.socket()

    async def squat() -> None:  # takes the bot's port once the pool handed it out, before the bot binds it
        await until(lambda: pool.held, timeout=30, interval=0.001, what="the pool to hand out a port")
        port = next(iter(pool.held))
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        taken.append(port)

    task = asyncio.create_task(squat())
    try:
        launched = await launch_bot(
            make_spec(),
            BotFiles(bots_root, new_bot_id()),
            pool,
            simulator_url=simulator.url,
            start_timeout=START_TIMEOUT,
            process_throttle_secs=THROTTLE,
        )
        try:
            await task
            assert launched.port_attempts == 2
            assert launched.process.port != taken[0]
            assert pool.held == {launched.process.port: launched.process.bot_id}
            assert launched.process.is_alive()
        finally:
            await launched.process.terminate(grace=5)
    finally:
        task.cancel()
        squatter.close()


async def test_terminate_takes_the_whole_process_group(tmp_path: Path, bots_root: Path) -> None:
    """A helper process that ignores SIGTERM (as a stuck worker might) does not outlive its bot."""
    program = tmp_path / "fake-freqtrade"
    program.write_text(
        "#!/bin/sh\n"
        "sh -c 'trap \"\" TERM; echo $$ > helper.pid; while true; do sleep 0.2; done' &\n"
        "while true; do sleep 0.2; done\n"
    )
    program.chmod(0o700)
    spec = make_spec()
    files = BotFiles(bots_root, new_bot_id())
    config = render_config(spec, files, port=20_000, credentials=ApiCredentials.generate(), simulator_url="http://x")
    files.write(config, spec.strategy_source)
    process = BotProcess.spawn(files, config, executable=program)
    helper_pid_file = files.folder / "helper.pid"
    try:
        await until(lambda: helper_pid_file.exists() and helper_pid_file.read_text().strip(), timeout=10)
        helper = psutil.Process(int(helper_pid_file.read_text()))
        assert os.getpgid(helper.pid) == process.pid

        result = await process.terminate(grace=5)

        assert (result.was_running, result.signal, result.exit_code) == (True, "SIGTERM", -signal.SIGTERM)
        await until(lambda: not helper.is_running() or helper.status() == psutil.STATUS_ZOMBIE, timeout=5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


# A stand-in for ``freqtrade trade``: answers /ping at once, /show_config the first time only after 3 s (more than
# the client's 2 s: a bot starting among a hundred on a busy host), then at once.
SLOW_FIRST_SHOW_CONFIG = """#!{python}
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
config = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
asked = []
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/api/v1/show_config":
            asked.append(time.time())
            if len(asked) == 1:
                time.sleep(3)
            body = {{"bot_name": config["bot_name"], "state": "running", "version": "2026.9", "dry_run": True,
                    "strategy": "AlwaysEnter", "stake_currency": "USDT", "exchange": "binance"}}
        else:
            body = {{"status": "pong"}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", config["api_server"]["listen_port"]), Handler)
server.serve_forever()
"""


async def test_a_bot_slow_to_answer_show_config_is_asked_again_not_killed(tmp_path: Path, bots_root: Path) -> None:
    program = tmp_path / "slow-freqtrade"
    program.write_text(SLOW_FIRST_SHOW_CONFIG.format(python=sys.executable))
    program.chmod(0o700)
    spec = make_spec()
    files = BotFiles(bots_root, new_bot_id())
    config = render_config(
        spec, files, port=free_port(), credentials=ApiCredentials.generate(), simulator_url="http://x"
    )
    files.write(config, spec.strategy_source)
    process = BotProcess.spawn(files, config, executable=program)
    try:
        ready = await process.wait_ready(30)
        assert ready.pid == process.pid  # the same process, asked again: not killed and started anew
        assert ready.seconds >= 3
        assert process.is_alive()
    finally:
        await process.terminate(grace=5)
