"""The restart policy with real processes: a killed bot comes back, so does one whose API stops answering
and one whose trading loop stops, and a bot that can't start fails after its crash loop with its last
log lines, and stays down."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from shared.bus.messages import BotFailed, BotStarted, BotStatus, BotStopped, CommandAccepted
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.trading_gateway.conftest import (
    Bus,
    Tokens,
    bearer,
    bots_root,
    crashing_spec,
    hanging_spec,
    running_gateway,
    settings_for,
    start,
)
from tests.trading_gateway.fleet.test_monitoring import samples, value
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow


async def test_killed_silent_and_stalled_bots_restart_and_a_crash_loop_fails(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(
        tmp_path,
        redis_url,
        simulator,
        tokens,
        bot_crash_loop_max=2,
        bot_unresponsive_timeout=3.0,
        bot_stall_timeout=8.0,
        bot_stop_grace=2.0,
    )
    cleanup.append(settings)
    bus = bus_factory(settings.gateway_id)
    healthy, crashing, hanging = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with running_gateway(settings) as gw:
        counted_before = await samples(gw)
        t0 = time.monotonic()
        for command in (start(healthy, 1), start(crashing, 1, crashing_spec()), start(hanging, 1, hanging_spec())):
            assert isinstance(await bus.answer(await bus.send(command)), CommandAccepted)

        # kill -9 of a running bot: reported, restarted with a new process, statuses go on.
        first = await bus.wait(BotStarted, bot_id=healthy)
        await bus.wait(BotStatus, bot_id=healthy)
        killed_at = time.monotonic()
        os.killpg(first.data.pid, signal.SIGKILL)
        crashed = await bus.wait(BotStopped, bot_id=healthy)
        assert crashed.data.exit_code == -signal.SIGKILL
        assert crashed.data.reason is not None
        assert "crashed: its process was killed by SIGKILL; restarting in" in crashed.data.reason
        second = await bus.wait(BotStarted, lambda e: e.data.pid != first.data.pid, bot_id=healthy)
        back_in = time.monotonic() - killed_at
        assert psutil.Process(second.data.pid).is_running()
        await bus.wait(BotStatus, lambda e: e.occurred_at > second.occurred_at, bot_id=healthy)

        # A bot whose API stops answering (SIGSTOP) is ended (SIGKILL after the grace) and started again.
        os.kill(second.data.pid, signal.SIGSTOP)
        silent = await bus.wait(BotStopped, lambda e: e.occurred_at > second.occurred_at, bot_id=healthy)
        assert silent.data.reason is not None
        assert "crashed: its API did not answer for" in silent.data.reason
        assert silent.data.exit_code == -signal.SIGKILL
        third = await bus.wait(BotStarted, lambda e: e.occurred_at > silent.occurred_at, bot_id=healthy)
        assert third.data.pid not in (first.data.pid, second.data.pid)

        # A bot whose trading loop hangs while its API answers is restarted too (Freqtrade's /health).
        stalled = await bus.wait(BotStopped, bot_id=hanging, timeout=60)
        assert stalled.data.reason is not None
        assert "crashed: its trading loop has not run since" in stalled.data.reason

        # A strategy that fails at import: 3 crashes (more than 2) → BOT_FAILED with what it logged.
        failed = await bus.wait(BotFailed, bot_id=crashing, timeout=90)
        to_failed = time.monotonic() - t0
        assert failed.data.crash_count == 3
        assert "it crashed 3 times in 10 min (more than 2)" in failed.data.reason
        assert "freqtrade exited with code" in failed.data.reason
        assert any("CrashAtStart fails on purpose" in line for line in failed.data.last_log_lines), (
            failed.data.last_log_lines
        )
        crashes = await bus.of(BotStopped, crashing)
        assert len(crashes) == 2  # the first two were restarted, the third failed it
        assert all("restarting in" in (c.data.reason or "") for c in crashes)

        listing = await gw.http.get("/api/v1/bots", headers=bearer(tokens.mint("admin")))
        views = {v["bot_id"]: v for v in listing.json()["bots"]}
        assert (views[str(healthy)]["actual"], views[str(healthy)]["crash_count"]) == ("running", 2)
        assert views[str(healthy)]["pid"] == third.data.pid
        assert "its API did not answer" in views[str(healthy)]["last_error"]
        failed_view = views[str(crashing)]
        assert (failed_view["desired"], failed_view["actual"], failed_view["pid"]) == ("running", "failed", None)
        assert failed_view["crash_count"] == 3

        # Failed means down: no further start of it while the healthy bot keeps reporting.
        statuses = len(await bus.of(BotStatus, healthy))
        await bus.wait(BotStatus, lambda e: True, bot_id=healthy)
        await _statuses_beyond(bus, healthy, statuses + 4)
        assert len(await bus.of(BotFailed, crashing)) == 1
        assert str(crashing) not in [o.bot_id for o in find_orphans(bots_root(settings))]

        # /metrics counts them (process-wide counters: at least this test's): the healthy bot twice, the
        # hanging one at least once, the crashing one twice, then its failure.
        counted = await samples(gw)
        crash = {"reason": "crash"}
        restarts = value(counted, "freqfleet_bot_restarts_total", **crash)
        assert restarts - value(counted_before, "freqfleet_bot_restarts_total", **crash) >= 5
        failures = value(counted, "freqfleet_bot_failures_total")
        assert failures - value(counted_before, "freqfleet_bot_failures_total") >= 1
        assert value(counted, "freqfleet_gateway_bots", gateway=settings.gateway_id, state="failed") >= 1
    with capfd.disabled():
        print(f"\nkill -9 to BOT_STARTED again {back_in:.2f} s; crash loop to BOT_FAILED {to_failed:.2f} s")


async def _statuses_beyond(bus: Bus, bot_id: uuid.UUID, count: int) -> None:
    from tests.helpers import async_wait_for

    async def enough() -> bool:
        return len(await bus.of(BotStatus, bot_id)) >= count

    await async_wait_for(enough, timeout=30, what=f"{count} statuses")
