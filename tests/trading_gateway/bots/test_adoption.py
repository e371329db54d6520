"""Re-adoption from the state file: live bots are kept (same process), dead ones cleaned up, a pid
reused by an unrelated program is never signalled."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from tests.exchange_simulator.conftest import SimulatorProcess
from tests.trading_gateway.bots.conftest import GRACE, START_TIMEOUT, THROTTLE, make_spec, new_bot_id
from trading_gateway.bots.adoption import adopt, find_orphans
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.launch import launch_bot
from trading_gateway.bots.ports import PortPool
from trading_gateway.bots.process import BotProcess
from trading_gateway.bots.state import BotRecord, Desired, StateFile


def _record(files: BotFiles, desired: Desired, *, pid: int, create_time: float, port: int) -> BotRecord:
    return BotRecord(bot_id=files.bot_id, desired=desired, config_path=str(files.config)).with_process(
        pid=pid,
        create_time=create_time,
        port=port,
        credentials=ApiCredentials.generate(),
        started_at=datetime.now(UTC),
        freqtrade_version="2026.9",
    )


async def test_a_pid_reused_by_another_program_is_never_signalled(tmp_path: Path, pool: PortPool) -> None:
    sleeper = await asyncio.create_subprocess_exec("sleep", "120", start_new_session=True)
    try:
        started = psutil.Process(sleeper.pid).create_time()
        state = StateFile(tmp_path / "bots-state.json")
        # Bot a's pid is now the sleeper's, which started at another time.
        files_a = BotFiles(tmp_path / "bots", "bot-a")
        state.put(_record(files_a, Desired.running, pid=sleeper.pid, create_time=started - 100, port=pool.start))
        # Bot b's record even has the sleeper's start time, but its command line is not a bot's.
        files_b = BotFiles(tmp_path / "bots", "bot-b")
        state.put(_record(files_b, Desired.stopped, pid=sleeper.pid, create_time=started, port=pool.start + 1))
        state.put(BotRecord(bot_id="bot-c", desired=Desired.stopped, config_path="/nowhere/bot-c/config.json"))

        report = await adopt(state, pool, api_timeout=1)

        assert (report.adopted, report.unresponsive) == ([], [])
        dead = {d.record.bot_id: d for d in report.dead}
        assert sorted(dead) == ["bot-a", "bot-b"]
        assert f"pid {sleeper.pid} now belongs to another process" in dead["bot-a"].reason
        assert "its command line does not name" in dead["bot-b"].reason
        assert [r.bot_id for r in report.without_process] == ["bot-c"]
        assert [r.bot_id for r in report.to_restart()] == ["bot-a"]  # bot b was meant to be stopped
        assert sleeper.returncode is None  # untouched
        assert pool.held == {}

        reloaded = StateFile(state.path)
        a, b = reloaded.get("bot-a"), reloaded.get("bot-b")
        assert a is not None
        assert b is not None
        assert (a.pid, a.create_time, a.port, a.password) == (None, None, None, None)
        assert len(a.crash_times) == 1  # it was meant to run
        assert a.last_error is not None
        assert "found dead at adoption" in a.last_error
        assert (b.pid, b.crash_times) == (None, [])

        # A BotProcess holding the wrong start time does not signal it either.
        impostor = BotProcess.attach(
            files=files_a,
            port=pool.start,
            credentials=ApiCredentials.generate(),
            pid=sleeper.pid,
            create_time=started - 100,
        )
        assert not impostor.is_alive()
        result = await impostor.stop(grace=1)
        assert (result.was_running, result.signal, result.rest_stopped) == (False, "none", False)
        assert sleeper.returncode is None
        assert psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE
    finally:
        sleeper.kill()
        await sleeper.wait()


@pytest.mark.slow
async def test_a_second_gateway_adopts_a_running_bot_and_cleans_up_after_it_dies(
    simulator: SimulatorProcess, bots_root: Path, tmp_path: Path, pool: PortPool
) -> None:
    path = tmp_path / "bots-state.json"
    first_pool = pool

    def new_pool() -> PortPool:  # the pool of a gateway started afresh: nothing held yet
        return PortPool(first_pool.start, first_pool.end)

    files = BotFiles(bots_root, new_bot_id())
    launched = await launch_bot(
        make_spec(),
        files,
        first_pool,
        simulator_url=simulator.url,
        start_timeout=START_TIMEOUT,
        process_throttle_secs=THROTTLE,
        state=StateFile(path),
        generation=7,
    )
    first = launched.process
    try:
        # A new gateway: new state object and pool from the same file.
        second_pool = new_pool()
        report = await adopt(StateFile(path), second_pool, bots_root=bots_root, api_timeout=10)
        print(f"\nadoption of 1 live bot: {report.seconds:.2f} s")
        assert [a.record.bot_id for a in report.adopted] == [files.bot_id]
        adopted = report.adopted[0]
        assert (adopted.process.pid, adopted.process.create_time) == (first.pid, first.create_time)
        assert adopted.state == "running"
        assert adopted.record.generation == 7
        assert second_pool.held == {first.port: files.bot_id}
        assert (report.dead, report.unresponsive, report.orphans) == ([], [], [])
        assert [o.pid for o in find_orphans(bots_root)] == [first.pid]  # no second process for the bot
        async with adopted.process.client() as api:
            assert (await api.show_config()).bot_name == files.bot_id

        # A bot that is ours but frozen: found, not adopted, its port kept from others.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            frozen_pool = new_pool()
            frozen = await adopt(StateFile(path), frozen_pool, api_timeout=1)
            assert [u.record.bot_id for u in frozen.unresponsive] == [files.bot_id]
            assert "did not answer" in frozen.unresponsive[0].reason
            assert frozen_pool.held == {first.port: files.bot_id}
        finally:
            os.kill(first.pid, signal.SIGCONT)

        # A gateway that lost its state file finds the bot as an orphan (and leaves it alone).
        lost = await adopt(StateFile(tmp_path / "other-state.json"), new_pool(), bots_root=bots_root)
        assert [(o.pid, o.bot_id, o.config_path) for o in lost.orphans] == [
            (first.pid, files.bot_id, str(files.config))
        ]
        assert first.is_alive()

        # The adopting gateway stops it (it did not spawn it: no exit code, but it is gone).
        stopped = await adopted.process.stop(GRACE)
        assert (stopped.was_running, stopped.rest_stopped, stopped.signal) == (True, True, "SIGTERM")
        assert not first.is_alive()

        # The next gateway finds it dead: record cleaned, a crash counted, restart asked for.
        after = await adopt(StateFile(path), new_pool(), bots_root=bots_root, api_timeout=1)
        assert after.adopted == []
        assert [d.record.bot_id for d in after.dead] == [files.bot_id]
        assert [r.bot_id for r in after.to_restart()] == [files.bot_id]
        record = StateFile(path).get(files.bot_id)
        assert record is not None
        assert (record.pid, record.port, len(record.crash_times), record.generation) == (None, None, 1, 7)
    finally:
        if first.is_alive():
            os.kill(first.pid, signal.SIGCONT)
        await first.terminate(grace=5)
