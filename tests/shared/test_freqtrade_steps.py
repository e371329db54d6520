"""The freqtrade step runner on its own, with a stand-in ``freqtrade``: a real program, run as the runner runs
freqtrade (its own process group, the cleaned environment, a log file), that does what each test asks of it.

The real freqtrade under the runner is tested through the strategy check and the FreqAI training."""

from __future__ import annotations

import json
import sys
import sysconfig
import time
from pathlib import Path

import psutil
import pytest

from shared.exchange import SIMULATOR, offline_config, render_exchange_section
from shared.freqtrade_steps import (
    ENV_ALLOWED,
    FreqtradeSteps,
    config_skeleton,
    freqtrade_env,
    freqtrade_version,
)
from shared.sandbox.host import HostSandbox
from shared.sandbox.policy import Limits

# What the stand-in does is named by its first argument; it writes the log freqtrade would (``--logfile``).
FREQTRADE = """#!{python}
import json, os, subprocess, sys, time
args = sys.argv[1:]
logfile = args[args.index("--logfile") + 1]
mode = args[0]
home = os.getcwd()

def log(*lines):
    with open(logfile, "a") as f:
        f.write("".join(line + "\\n" for line in lines))

if mode == "log":
    print("printed before its logging was set up")
    with open("env.json", "w") as f:
        json.dump({{"env": dict(os.environ), "args": args}}, f)
    log(
        "2026-01-01 00:00:00,000 - freqtrade - INFO - freqtrade 2099.1",
        "",
        "   ",
        "Downloading ━━━━━━━━━━ 50%",
        f'  File "{{home}}/strategies/Mine.py", line 3, in populate_indicators',
        f'  File "{{sys.prefix}}/lib/site.py", line 1, in here',
    )
    sys.exit(3)
if mode == "print":
    print("only printed")
    sys.exit(0)
if mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
    log("started")
    time.sleep(120)
if mode == "follow":
    log("first")
    deadline = time.monotonic() + 20
    while not os.path.exists("go") and time.monotonic() < deadline:  # the caller's callback makes it
        time.sleep(0.05)
    log("second" if os.path.exists("go") else "nobody followed")
    sys.exit(0)
if mode == "stray":
    os.symlink("/etc/hostname", os.path.join("user_data", "looks-like-a-log"))
    sys.exit(0)
"""


SIM = "http://127.0.0.1:8002"


class Stray(Exception):
    pass


class Interrupted(BaseException):
    """What a caller's time limit or shutdown raises in the middle of a step."""


class Steps(FreqtradeSteps):
    def stray_failure(self, step: str, stray: Path) -> Stray:
        return Stray(f"{step} left {stray.name}")


class StepsHidingSite(Steps):
    hide_site_packages = True


@pytest.fixture
def freqtrade(tmp_path: Path) -> Path:
    program = tmp_path / "bin" / "freqtrade"
    program.parent.mkdir()
    program.write_text(FREQTRADE.format(python=sys.executable))
    program.chmod(0o755)
    return program


def steps(tmp_path: Path, freqtrade: Path, seconds: float = 30, kind: type[Steps] = Steps) -> Steps:
    run = kind(tmp_path / "work", time.monotonic() + seconds, seconds, freqtrade=freqtrade)
    run.home.mkdir()
    run.userdir.mkdir()
    return run


def gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_step_gets_the_cleaned_environment_and_gives_its_exit_code_and_cleaned_log(
    tmp_path: Path, freqtrade: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FREQFLEET_DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw9")
    monkeypatch.setenv("TZ", "UTC")
    run = steps(tmp_path, freqtrade)
    code, log = run.run_step("download-data", ["log", "--pairs", "BTC/USDT"])
    assert code == 3
    seen = json.loads((run.home / "env.json").read_text())
    assert seen["args"] == ["log", "--pairs", "BTC/USDT", "--logfile", str(run.home / "download-data.log")]
    assert set(seen["env"]) <= set(ENV_ALLOWED)
    assert seen["env"]["TZ"] == "UTC"
    # The log file wins over what it printed; no blank lines, no progress bars, no work folder in the paths.
    assert log == [
        "2026-01-01 00:00:00,000 - freqtrade - INFO - freqtrade 2099.1",
        '  File "strategies/Mine.py", line 3, in populate_indicators',
        f'  File "{sys.prefix}/lib/site.py", line 1, in here',
    ]
    assert freqtrade_version(log) == "2099.1"
    assert (run.home / "download-data.output").read_text() == "printed before its logging was set up\n"


def test_the_environment_keeps_only_the_allowed_variables() -> None:
    given = {"PATH": "/bin", "HOME": "/root", "FREQFLEET_REDIS_URL": "redis://x", "REDIS_URL": "redis://y", "X": "1"}
    assert freqtrade_env(given) == {"PATH": "/bin", "HOME": "/root"}


def test_without_a_log_file_the_printed_output_is_the_log(tmp_path: Path, freqtrade: Path) -> None:
    code, log = steps(tmp_path, freqtrade).run_step("backtesting", ["print"])
    assert (code, log) == (0, ["only printed"])


def test_site_packages_are_cut_out_of_the_paths_when_asked(tmp_path: Path, freqtrade: Path) -> None:
    run = steps(tmp_path, freqtrade, kind=StepsHidingSite)
    site = sysconfig.get_paths()["purelib"]
    line = f'  File "{site}/freqtrade/main.py", line 1, in main'
    assert run.clean([line, f"{run.home}/config.json"]) == [
        '  File "freqtrade/main.py", line 1, in main',
        "config.json",
    ]
    assert Steps(tmp_path, 0, 1, freqtrade=freqtrade).clean([line]) == [line]


def test_a_callback_gets_the_log_lines_while_the_step_runs(tmp_path: Path, freqtrade: Path) -> None:
    run = steps(tmp_path, freqtrade)
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "first":
            (run.home / "go").touch()  # the stand-in waits for this before it writes its second line

    code, log = run.run_step("backtesting", ["follow"], on_line=on_line)
    assert code == 0
    assert lines == ["first", "second"] == log


@pytest.mark.parametrize("following", [False, True], ids=["waiting", "following"])
def test_a_step_past_the_deadline_is_killed_with_all_it_started(
    tmp_path: Path, freqtrade: Path, following: bool
) -> None:
    run = steps(tmp_path, freqtrade, seconds=1.5)
    started = time.monotonic()
    code, log = run.run_step("download-data", ["hang"], on_line=(lambda line: None) if following else None)
    assert code is None
    assert 1 < time.monotonic() - started < 10
    assert log == ["started"]
    assert gone(int((run.home / "child.pid").read_text()))


def test_a_caller_interrupted_while_a_step_runs_leaves_nothing_running(tmp_path: Path, freqtrade: Path) -> None:
    run = steps(tmp_path, freqtrade)

    def on_line(line: str) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        run.run_step("backtesting", ["hang"], on_line=on_line)
    assert gone(int((run.home / "child.pid").read_text()))


def test_a_step_that_leaves_a_symlink_fails_with_the_subclass_error(tmp_path: Path, freqtrade: Path) -> None:
    with pytest.raises(Stray, match=r"^backtesting left looks-like-a-log$"):
        steps(tmp_path, freqtrade).run_step("backtesting", ["stray"])


def test_the_inputs_arguments_and_candles_of_a_work_folder(tmp_path: Path, freqtrade: Path) -> None:
    run = Steps(tmp_path / "deep" / "work", time.monotonic() + 30, 30, freqtrade=freqtrade, simulator_url=SIM)
    results = run.home / "backtest_results"
    exchange = run.exchange_section(["BTC/USDT", "ETH/USDT"])
    assert exchange == render_exchange_section(SIMULATOR, ["BTC/USDT", "ETH/USDT"], simulator_url=SIM)
    real = Steps(tmp_path, 0, 1, exchange="kraken", simulator_url=SIM).exchange_section(["BTC/USDT"])
    assert real["name"] == "kraken"  # the simulator's URL is for the simulator only
    config = config_skeleton("bot", ["BTC/USDT", "ETH/USDT"], "5m", exchange, {"freqai": {"enabled": True}})
    assert list(config)[-2:] == ["freqai", *offline_config()]
    assert (config["stake_currency"], config["max_open_trades"], config["dry_run"]) == ("USDT", 2, True)
    path = run.prepare("Mine", "class Mine: ...\n", config, results)
    assert json.loads(path.read_text()) == config
    assert (run.strategies / "Mine.py").read_text() == "class Mine: ...\n"
    assert results.is_dir()
    assert run.userdir.is_dir()
    assert run.download_args(path, ["BTC/USDT"], ["5m", "1h"]) == [
        "download-data", "--config", str(path), "--userdir", str(run.userdir),
        "--pairs", "BTC/USDT", "--timeframes", "5m", "1h",
    ]  # fmt: skip
    assert run.backtest_args(path, "Mine") == [
        "backtesting", "--config", str(path), "--userdir", str(run.userdir),
        "--strategy", "Mine", "--strategy-path", str(run.strategies),
    ]  # fmt: skip
    candles = run.userdir / "data" / "binance"
    candles.mkdir(parents=True)
    (candles / "BTC_USDT-5m.feather").touch()
    (candles / "ETH_USDT-1h.feather").touch()
    assert run.missing_candles(["BTC/USDT", "ETH/USDT"], ["5m", "1h"]) == [("BTC/USDT", "1h"), ("ETH/USDT", "5m")]
    assert run.missing_candles(["BTC/USDT"], ["5m"], exchange="kraken") == [("BTC/USDT", "5m")]


def test_the_default_freqtrade_is_the_one_beside_this_python(tmp_path: Path) -> None:
    assert Steps(tmp_path, 0, 1).freqtrade == Path(sys.executable).with_name("freqtrade")


def test_under_a_sandbox_a_step_runs_as_its_own_uid_with_the_exchange_ports(tmp_path: Path) -> None:
    host = HostSandbox("uid+landlock", 4, 610_000, Limits())
    policy = Steps(tmp_path, 0, 1, sandbox=host, uid_offset=2, simulator_url=SIM).policy
    assert policy is not None
    assert (policy.home, policy.uid, policy.connect_ports, policy.bind_ports) == (str(tmp_path), 610_002, [8002], [])
    assert policy.env == freqtrade_env()
    assert Steps(tmp_path, 0, 1, sandbox=HostSandbox("none", 0, 610_000, Limits())).policy is None
    assert Steps(tmp_path, 0, 1).policy is None
    real = Steps(tmp_path, 0, 1, sandbox=host, exchange="binance").policy
    assert real is not None
    assert real.connect_ports == [443]
