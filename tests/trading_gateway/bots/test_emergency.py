"""Emergency stop of several real bots with open trades, one of them hung, one not running."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest

from shared.bus.messages import EmergencyOutcome
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET, START_TIMEOUT, THROTTLE, make_spec, new_bot_id
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.emergency import emergency_stop_all
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.launch import launch_bot
from trading_gateway.bots.ports import PortPool
from trading_gateway.bots.process import BotProcess

pytestmark = pytest.mark.slow
PAIRS = ("BTC/USDT", "ETH/USDT")


def db_trades(db: Path) -> list[tuple[int, int, str | None]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT id, is_open, exit_reason FROM trades ORDER BY id"))


async def wait_open_trades(bot: BotProcess, count: int) -> None:
    """``count`` open trades whose entries have filled (``forceexit`` deletes a trade whose entry has not)."""
    async with bot.client() as api:

        async def enough() -> bool:
            trades = await api.status()
            return len(trades) == count and all(t["nr_of_successful_entries"] > 0 for t in trades)

        await async_wait_for(enough, timeout=30, interval=0.2, what=f"{count} open trades of bot {bot.bot_id}")


async def test_emergency_stop_closes_trades_and_ends_every_bot(
    simulator: SimulatorProcess, bots_root: Path, pool: PortPool, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = make_spec(PAIRS, strategy_source=ALWAYS_ENTER_MARKET)  # market entries fill at once, even under load
    launched = await asyncio.gather(
        *(
            launch_bot(
                spec,
                BotFiles(bots_root, new_bot_id()),
                pool,
                simulator_url=simulator.url,
                start_timeout=START_TIMEOUT,
                process_throttle_secs=THROTTLE,
            )
            for _ in range(4)
        )
    )
    bots = [b.process for b in launched]
    healthy, hung = bots[:3], bots[3]
    # A bot whose process is already gone.
    finished = await asyncio.create_subprocess_exec("true")
    gone_files = BotFiles(bots_root, new_bot_id())
    gone = BotProcess.attach(
        files=gone_files, port=pool.start, credentials=ApiCredentials.generate(), pid=finished.pid, create_time=1.0
    )
    await finished.wait()
    try:
        await asyncio.gather(*(wait_open_trades(bot, len(PAIRS)) for bot in bots))
        os.kill(hung.pid, signal.SIGSTOP)  # its API stops answering

        fleet = await emergency_stop_all([*healthy, hung, gone], grace=3)

        results = {r.bot_id: r for r in fleet.results}
        assert [r.bot_id for r in fleet.results] == [b.bot_id for b in [*healthy, hung, gone]]
        for bot in healthy:
            r = results[bot.bot_id]
            assert r.outcome == "halted", r
            assert (r.trades_open_before, r.trades_closed, r.trades_left_open) == (2, 2, 0), r
            assert r.paused_after is not None
            assert r.exited_after is not None
            assert r.detail is None
            assert r.steps[0].startswith("stopentry: paused")
            assert not bot.is_alive()
            rows = db_trades(bot.files.db)
            assert [(is_open, reason) for _, is_open, reason in rows] == [(0, "force_exit")] * 2
        h = results[hung.bot_id]
        assert h.outcome == "halted"
        assert h.paused_after is None
        assert h.trades_open_before == 2  # read from its database: the API did not answer
        assert (h.trades_closed, h.trades_left_open) == (0, 2)
        assert "2 trade(s) left open" in (h.detail or "")
        assert any("skipped (the API does not answer)" in s for s in h.steps)
        assert "SIGKILL" in h.steps[-1]
        assert not hung.is_alive()
        assert [is_open for _, is_open, _ in db_trades(hung.files.db)] == [1, 1]  # left for a restarted bot
        assert results[gone.bot_id].outcome == "not_running"
        assert not psutil.pid_exists(bots[0].pid)
        assert fleet.seconds_to_all_paused is None  # the hung bot never paused
        assert fleet.seconds_to_all_exited is not None

        messages = [r.to_message() for r in fleet.results]
        assert all(isinstance(m, EmergencyOutcome) for m in messages)
        assert [m.outcome for m in messages] == ["halted"] * 4 + ["not_running"]
        paused = max(results[b.bot_id].paused_after or 0 for b in healthy)
        exited = max(results[b.bot_id].exited_after or 0 for b in healthy)
        with capfd.disabled():
            print(
                f"\nemergency stop of {len(healthy)} bots with 2 trades each: all paused {paused:.2f} s, "
                f"all exited {exited:.2f} s; with a hung bot too (grace 3 s): {fleet.seconds:.2f} s in all"
            )
    finally:
        for bot in bots:
            if bot.is_alive():
                os.kill(bot.pid, signal.SIGCONT)
            await bot.terminate(grace=5)
