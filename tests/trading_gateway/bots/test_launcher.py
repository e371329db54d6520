"""The fork launcher with real Freqtrade: it imports once, stays one thread, forks bots that trade on the simulator
like exec'd ones, runs user code only in the child, records their exit codes (a bot whose lease lapses ends itself);
and a launch it can't do is exec'd."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import freqtrade.main
import psutil
import pytest

from shared.bus.messages import BotSpec
from shared.watchdog import EXIT_LEASE, write_lease
from shared.watchdog import now as watchdog_clock
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import until
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER, GRACE, START_TIMEOUT, THROTTLE, make_spec, new_bot_id
from tests.trading_gateway.bots.test_process import db_trades, open_trades
from trading_gateway.bots.adoption import adopt
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.launch import LaunchedBot, launch_bot
from trading_gateway.bots.launcher import Launcher, LauncherError, Launchers, LauncherSlot
from trading_gateway.bots.ports import PortPool
from trading_gateway.bots.process import bot_environment
from trading_gateway.bots.state import StateFile

pytestmark = pytest.mark.slow

# AlwaysEnter that, when its module is imported, writes down which process imported it (pid, parent, command line).
WHO_IMPORTS = (
    "import json as _json, os as _os\n"
    "with open(_os.path.join(_os.getcwd(), 'imported-by.json'), 'w') as _f:\n"
    "    _json.dump({'pid': _os.getpid(), 'ppid': _os.getppid()}, _f)\n" + ALWAYS_ENTER.read_text()
)

# ...and that also starts a helper process which ignores SIGTERM (as a stuck worker might), its pid in helper.pid.
WITH_STUBBORN_HELPER = (
    "import subprocess as _sp\n"
    "_sp.Popen(['sh', '-c', 'trap \"\" TERM; echo $$ > helper.pid; exec sleep 600'])\n" + WHO_IMPORTS
)


async def launch(
    launcher: Launcher,
    simulator: SimulatorProcess,
    pool: PortPool,
    files: BotFiles,
    spec: BotSpec | None = None,
    state: StateFile | None = None,
    watchdog: bool = False,
) -> LaunchedBot:
    """``spec`` (AlwaysEnter on BTC/USDT by default) launched through ``launcher`` on the simulator."""
    return await launch_bot(
        spec or make_spec(),
        files,
        pool,
        simulator_url=simulator.url,
        start_timeout=START_TIMEOUT,
        process_throttle_secs=THROTTLE,
        state=state,
        launcher=launcher,
        watchdog=watchdog,
    )


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    started = Launcher(tmp_path / "launcher", env=bot_environment(), freqai=False)
    started.start()
    try:
        yield started
    finally:
        started.close(wait=10)


async def test_a_forked_bot_trades_like_an_execd_one_and_user_code_runs_only_in_it(
    launcher: Launcher,
    simulator: SimulatorProcess,
    bots_root: Path,
    pool: PortPool,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert launcher.hello["threads"] == 1  # nothing started a thread pool: forking is safe
    assert launcher.hello["freqtrade"] == "2026.9"
    files = BotFiles(bots_root, new_bot_id())
    state = StateFile(tmp_path / "bots-state.json")
    t0 = time.monotonic()
    launched = await launch(launcher, simulator, pool, files, make_spec(strategy_source=WITH_STUBBORN_HELPER), state)
    process, ready = launched.process, launched.ready
    try:
        assert process.launcher == "fork"
        assert (ready.freqtrade_version, ready.state) == ("2026.9", "running")
        proc = psutil.Process(process.pid)
        assert proc.ppid() == launcher.pid  # the launcher's child, not the gateway's
        assert os.getpgid(process.pid) == process.pid  # a session and group of its own, as an exec'd bot
        assert str(files.config) in " ".join(proc.cmdline())  # what ps and the gateway's adoption read
        leaked = [k for k in proc.environ() if k.startswith(("FREQFLEET_", "PYTEST_")) or k == "REDIS_URL"]
        assert leaked == []
        # The strategy was imported by the bot, never by the launcher.
        who = json.loads((files.folder / "imported-by.json").read_text())
        assert (who["pid"], who["ppid"]) == (process.pid, launcher.pid)
        helper_pid = files.folder / "helper.pid"
        await until(lambda: helper_pid.exists() and helper_pid.read_text().strip(), timeout=10)
        helper = psutil.Process(int(helper_pid.read_text()))
        assert os.getpgid(helper.pid) == process.pid  # in the bot's group
        record = state.get(files.bot_id)
        assert record is not None
        assert (record.pid, record.create_time) == (process.pid, process.create_time)

        async with process.client() as api:
            trades = await open_trades(api)
            to_trade = time.monotonic() - t0
            assert trades[0]["pair"] == "BTC/USDT"
        memory = proc.memory_full_info()
        stopped = await process.stop(GRACE)
        with capfd.disabled():
            print(
                f"\nforked: to ready {ready.seconds:.2f} s, to first trade {to_trade:.2f} s; RSS "
                f"{memory.rss / 2**20:.0f} MiB, USS {memory.uss / 2**20:.0f} MiB; stop {stopped.seconds:.2f} s "
                f"({stopped.signal}, exit code {stopped.exit_code})"
            )
        assert stopped.was_running
        assert stopped.rest_stopped
        assert stopped.signal == "SIGTERM"
        assert stopped.exit_code is not None  # recorded by the launcher, its parent
        assert not process.is_alive()
        # The helper ignored SIGTERM and did not outlive its bot (SIGKILL to what was left of the group).
        await until(lambda: not helper.is_running() or helper.status() == psutil.STATUS_ZOMBIE, timeout=10)
        assert "Long signal found" in files.log.read_text()
    finally:
        await process.terminate(grace=5)


async def test_a_launch_the_launcher_cannot_do_is_execd(
    launcher: Launcher, simulator: SimulatorProcess, bots_root: Path, pool: PortPool
) -> None:
    launcher.close()  # gone: no request can reach it
    files = BotFiles(bots_root, new_bot_id())
    launched = await launch(launcher, simulator, pool, files)
    try:
        assert launched.process.launcher == "exec"
        assert psutil.Process(launched.process.pid).ppid() == os.getpid()
    finally:
        await launched.process.terminate(grace=5)


def test_freqtrades_entry_point_is_what_the_child_calls() -> None:
    """The child runs ``freqtrade.main.main(argv[1:])`` and turns its ``SystemExit`` into the exit code: an upgrade of
    Freqtrade that changes either is caught here, not in production."""
    assert list(inspect.signature(freqtrade.main.main).parameters) == ["sysargv"]
    with pytest.raises(SystemExit) as ended:
        freqtrade.main.main(["--version"])
    assert ended.value.code == 0


def test_the_launcher_holds_nothing_of_the_gateways_and_refuses_to_fork_with_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FREQFLEET_TEST_SENTINEL", "gateway-secret-value")
    started = Launcher(tmp_path / "launcher", env=bot_environment(), freqai=False)
    started.start()
    try:
        assert started.pid is not None
        names = set(started.hello["environment"])  # what it runs with, and its bots start from
        assert "FREQFLEET_TEST_SENTINEL" not in names
        assert {"OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "JOBLIB_MULTIPROCESSING"} <= names
        # The environment block the kernel shows for it (and for every forked bot): setproctitle took its memory
        # for the command lines, nothing of it is left to read.
        environ = Path(f"/proc/{started.pid}/environ").read_bytes()
        assert b"gateway-secret-value" not in environ
        assert environ.strip(b"\0 ") == b""
    finally:
        started.close(wait=10)

    # Without the thread-pool variables its imports start threads: it refuses to serve (exit 3, saying which).
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [sys.executable, "-I", "-m", "shared.launcher.server", "--control-fd", str(theirs.fileno())]
    refused = subprocess.run(
        [*argv, "--exits", str(tmp_path / "exits")],
        env=bot_environment(),
        pass_fds=(theirs.fileno(),),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    theirs.close()
    ours.close()
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "threads after the imports" in refused.stdout


async def test_a_bot_outlives_its_launcher_and_the_next_launch_starts_another(
    simulator: SimulatorProcess, bots_root: Path, pool: PortPool, tmp_path: Path
) -> None:
    slot = LauncherSlot(tmp_path / "launcher", env=bot_environment())
    first = await slot.get()
    assert first is not None
    launched = await launch(first, simulator, pool, BotFiles(bots_root, new_bot_id()))
    process = launched.process
    try:
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        await until(lambda: not first.alive(), timeout=10, what="the launcher gone")
        async with process.client() as api:
            assert await api.ping()  # the bot runs on (its parent is now init)
        second = await slot.get()
        assert second is not None
        assert second.pid != first.pid
        stopped = await process.stop(GRACE)
        assert stopped.was_running
        assert stopped.exit_code is None  # its parent, which would have recorded it, is gone
    finally:
        await process.terminate(grace=5)
        await slot.close(wait=10)


def test_a_child_that_cannot_prepare_is_refused_and_the_launcher_serves_on(launcher: Launcher, tmp_path: Path) -> None:
    console = os.open(tmp_path / "console.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with pytest.raises(LauncherError, match=r"refused \(sandbox\).*No such file"):
            launcher.spawn(
                ["/bin/true"], cwd=tmp_path / "not-there", env=bot_environment(), policy=None, console=console
            )
    finally:
        os.close(console)
    assert launcher.alive()
    assert psutil.Process(launcher.pid).children() == []  # the child did not stay
    assert "freqfleet-sandbox:" in (tmp_path / "console.log").read_text()  # said where the bot's output goes


async def test_a_forked_bot_ends_itself_when_its_lease_lapses_and_its_adopter_learns_why(
    launcher: Launcher, simulator: SimulatorProcess, bots_root: Path, pool: PortPool, tmp_path: Path
) -> None:
    """The lease watchdog in a forked bot (shared/watchdog.py), as a frozen gateway leaves it: no renewal, so the bot
    ends itself (exit 75, saying why on its console), which the launcher records for whoever adopted it."""
    state_path = tmp_path / "bots-state.json"
    files = BotFiles(bots_root, new_bot_id())
    write_lease(files.lease, files.bot_id, watchdog_clock(), 3600.0)
    launched = await launch(launcher, simulator, pool, files, state=StateFile(state_path), watchdog=True)
    try:
        record = StateFile(state_path).get(files.bot_id)
        assert record is not None
        assert record.launcher == "fork"
        # Another gateway (its own state object and pool): it adopts the bot, whose parent is still the launcher.
        report = await adopt(StateFile(state_path), PortPool(pool.start, pool.end), exits=launcher.exits)
        [adopted] = report.adopted
        assert (adopted.process.pid, adopted.process.launcher) == (launched.process.pid, "fork")
        async with adopted.process.client() as api:
            await open_trades(api)  # it trades while its lease is renewed
        write_lease(files.lease, files.bot_id, watchdog_clock() - 3600.0, 3600.0)  # the renewals stopped long ago
        await until(lambda: adopted.process.exit_code is not None, timeout=30, what="the bot to end itself")
        assert adopted.process.exit_code == EXIT_LEASE  # recorded by the launcher, read here
        console = files.console_log.read_text()
        assert "freqfleet-watchdog: the gateway's lease on this bot was not renewed in time" in console
        assert db_trades(files.db)[0]["is_open"] == 1  # its open trade is left for the next holder
    finally:
        await launched.process.terminate(grace=5)


def mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


async def test_freqai_libraries_are_only_in_the_launcher_of_freqai_bots(tmp_path: Path) -> None:
    launchers = Launchers(tmp_path / "launcher", env=bot_environment())
    try:
        plain = await launchers.get(freqai=False)
        freqai = await launchers.get(freqai=True)
        assert plain is not None
        assert freqai is not None
        assert plain.pid != freqai.pid
        assert await launchers.get(freqai=False) is plain  # one per kind, kept
        assert (plain.hello["freqai"], freqai.hello["freqai"]) == (False, True)
        assert plain.pid is not None
        assert freqai.pid is not None
        # What a bot forked from each maps: LightGBM's and XGBoost's native libraries only under FreqAI's.
        for library in ("lib_lightgbm", "libxgboost"):
            assert library not in mapped_files(plain.pid)
            assert library in mapped_files(freqai.pid)
        assert {p.name for p in (tmp_path / "launcher").iterdir()} >= {"launcher.log", "launcher-freqai.log"}
    finally:
        await launchers.close(wait=10)
