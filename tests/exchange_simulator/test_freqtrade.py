"""Real Freqtrade processes against ``freqfleet simulator``: a dry-run bot trades, exits on
``forceexit`` and on its stoploss after a price shock, survives an outage; ``download-data`` works.

The bot's config comes from ``shared.exchange`` exactly as Freqfleet renders it for its bots.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import pytest

from shared.exchange import offline_config, render_exchange_section
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.slow
T = TypeVar("T")

STRATEGIES = Path(__file__).parent / "strategies"
BOT_PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
STOPLOSS = -0.03


@dataclass
class Bot:
    proc: subprocess.Popen[bytes]
    api: httpx.Client
    log: Path
    spawned_at: float

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def open_trade(self, pair: str) -> dict[str, Any] | None:
        response = self.api.get("/api/v1/status")  # the open trades
        response.raise_for_status()
        return next((t for t in response.json() if t["pair"] == pair), None)

    def trade(self, trade_id: int) -> dict[str, Any]:
        response = self.api.get(f"/api/v1/trade/{trade_id}")
        response.raise_for_status()
        trade: dict[str, Any] = response.json()
        return trade

    def wait(self, predicate: Callable[[], T], what: str, timeout: float = 30) -> T:
        """``wait_for`` that shows the end of the bot's log when it times out."""
        try:
            return wait_for(predicate, timeout=timeout, interval=0.2, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- the bot's log ---\n{self.log_text()[-4000:]}") from None

    def wait_closed(self, trade_id: int, what: str) -> dict[str, Any]:
        return self.wait(lambda: (t := self.trade(trade_id))["is_open"] is False and t, what)


def bot_config(sim_url: str, api_port: int, username: str, password: str) -> dict[str, Any]:
    return {
        "bot_name": "simulator-test-bot",
        "initial_state": "running",
        "dry_run": True,
        "dry_run_wallet": 10_000,
        "trading_mode": "spot",
        "stake_currency": "USDT",
        "stake_amount": 100,
        "max_open_trades": len(BOT_PAIRS),
        "timeframe": "1m",
        "stoploss": STOPLOSS,
        "exchange": render_exchange_section("simulator", BOT_PAIRS, simulator_url=sim_url),
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "order_types": {"entry": "market", "exit": "market", "stoploss": "market", "stoploss_on_exchange": False},
        "internals": {"process_throttle_secs": 1},
        "api_server": {
            "enabled": True,
            "listen_ip_address": "127.0.0.1",
            "listen_port": api_port,
            "username": username,
            "password": password,
            "jwt_secret_key": secrets.token_hex(32),
            "ws_token": secrets.token_urlsafe(16),
            "CORS_origins": [],
            "verbosity": "error",
        },
        **offline_config(),
    }


def bot_env() -> dict[str, str]:
    """Our environment without pytest's markers: Freqtrade sets up no logging (no ``--logfile``)
    when it sees ``PYTEST_VERSION``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def _ping(api: httpx.Client) -> bool:
    try:
        return api.get("/api/v1/ping", timeout=2).json() == {"status": "pong"}
    except httpx.HTTPError:
        return False


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="module")
def bot(sim_process: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    """One dry-run bot on three pairs for the module, with the always-enter strategy."""
    home = tmp_path_factory.mktemp("bot")
    (home / "user_data").mkdir()
    port, username, password = free_port(), "tester", secrets.token_urlsafe(16)
    config = home / "config.json"
    config.write_text(json.dumps(bot_config(sim_process.url, port, username, password)))
    log = home / "freqtrade.log"
    argv = [sys.executable, "-m", "freqtrade", "trade", "--config", str(config), "--strategy", "AlwaysEnter"]
    argv += ["--strategy-path", str(STRATEGIES), "--userdir", str(home / "user_data")]
    argv += ["--db-url", f"sqlite:///{home / 'trades.sqlite'}", "--logfile", str(log)]
    spawned_at = time.monotonic()
    with (home / "stdout.log").open("wb") as out:  # what it prints before its logging is set up
        proc = subprocess.Popen(
            argv, cwd=home, env=bot_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(username, password), timeout=30)
    bot = Bot(proc, api, log, spawned_at)
    try:
        wait_for(lambda: proc.poll() is None and _ping(api), timeout=60, what="the bot's REST API")
        # The port answers: check it is our bot, not another process on a reused port.
        assert api.get("/api/v1/show_config").json()["bot_name"] == "simulator-test-bot"
        yield bot
    except BaseException:
        print((home / "stdout.log").read_text(errors="replace")[-5000:])
        raise
    finally:
        api.close()
        stop_process_group(proc)


@pytest.fixture(autouse=True)
def _reset_after(sim_process: SimulatorProcess) -> Iterator[None]:
    """No shock, outage or latency outlives its test (the module shares one simulator)."""
    yield
    httpx.post(f"{sim_process.url}/_sim/reset", timeout=10).raise_for_status()


def test_a_bot_opens_a_trade_at_once_and_forceexit_closes_it(bot: Bot, sim_process: SimulatorProcess) -> None:
    trade = bot.wait(lambda: bot.open_trade("BTC/USDT"), "a BTC/USDT trade")
    seconds_to_trade = time.monotonic() - bot.spawned_at
    assert seconds_to_trade < 30
    print(f"spawn to open trade: {seconds_to_trade:.1f} s")
    price = float(httpx.get(f"{sim_process.url}/api/v3/ticker/price", params={"symbol": "BTCUSDT"}).json()["price"])
    assert trade["open_rate"] == pytest.approx(price, rel=0.01)  # filled at the simulator's price

    response = bot.api.post("/api/v1/forceexit", json={"tradeid": str(trade["trade_id"]), "ordertype": "market"})
    assert response.status_code == 200, response.text
    closed = bot.wait_closed(trade["trade_id"], "the trade to close")
    assert closed["exit_reason"] == "force_exit"
    assert closed["close_rate"] == pytest.approx(price, rel=0.01)


def test_a_price_shock_makes_the_bot_exit_on_its_stoploss(bot: Bot, sim_process: SimulatorProcess) -> None:
    trade = bot.wait(lambda: bot.open_trade("ETH/USDT"), "an ETH/USDT trade")
    shock = httpx.post(f"{sim_process.url}/_sim/shock", json={"pair": "ETH/USDT", "percent": -10}).json()
    closed = bot.wait_closed(trade["trade_id"], "the stoploss exit")
    assert closed["exit_reason"] == "stop_loss"
    assert closed["close_rate"] == pytest.approx(shock["price_after"], rel=0.01)
    assert closed["profit_ratio"] < STOPLOSS
    assert "Exit for ETH/USDT detected. Reason: stop_loss" in bot.log_text()


def test_an_outage_makes_the_bot_log_errors_and_it_recovers(bot: Bot, sim_process: SimulatorProcess) -> None:
    trade = bot.wait(lambda: bot.open_trade("SOL/USDT"), "a SOL/USDT trade")
    log_before = len(bot.log_text())
    httpx.post(f"{sim_process.url}/_sim/outage", json={"seconds": 6, "mode": "error"}).raise_for_status()
    # The bot keeps running and logs the exchange's errors (its loop reads the book of open trades).
    bot.wait(
        lambda: "Internal error; unable to process your request" in bot.log_text()[log_before:],
        "exchange errors in the bot's log",
        timeout=10,
    )
    assert _ping(bot.api)
    # An unhandled error in the bot's API drops the connection: do not keep this one alive.
    refused = bot.api.post(
        "/api/v1/forceexit",
        json={"tradeid": str(trade["trade_id"]), "ordertype": "market"},
        headers={"Connection": "close"},
    )
    assert refused.status_code >= 500  # no exit without an exchange
    assert bot.trade(trade["trade_id"])["is_open"] is True

    wait_for(
        lambda: httpx.get(f"{sim_process.url}/_sim/state").json()["outage"] is None,
        timeout=15,
        what="the end of the outage",
    )
    stats = httpx.get(f"{sim_process.url}/_sim/stats").json()
    assert stats["endpoints"]["/api/v3/depth"]["statuses"].get("503", 0) > 0

    def exit_accepted() -> bool:
        r = bot.api.post("/api/v1/forceexit", json={"tradeid": str(trade["trade_id"]), "ordertype": "market"})
        return r.status_code == 200

    bot.wait(exit_accepted, "forceexit to work again", timeout=20)
    closed = bot.wait_closed(trade["trade_id"], "the trade to close after the outage")
    assert closed["exit_reason"] == "force_exit"


def test_download_data_fetches_30_days_of_5m_candles(sim_process: SimulatorProcess, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "stake_currency": "USDT",
                "dry_run": True,
                "trading_mode": "spot",
                "exchange": render_exchange_section("simulator", ["BTC/USDT"], simulator_url=sim_process.url),
                "pairlists": [{"method": "StaticPairList"}],
                **offline_config(),
            }
        )
    )
    userdir = tmp_path / "user_data"
    userdir.mkdir()
    pages_before = httpx.get(f"{sim_process.url}/_sim/stats").json()["endpoints"].get("/api/v3/klines", {})
    started = time.time()
    argv = [sys.executable, "-m", "freqtrade", "download-data", "--config", str(config), "--userdir", str(userdir)]
    argv += ["--pairs", "BTC/USDT", "ETH/USDT", "--timeframes", "5m", "--days", "30"]
    result = subprocess.run(
        argv,
        cwd=tmp_path,
        env=bot_env(),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pages_after = httpx.get(f"{sim_process.url}/_sim/stats").json()["endpoints"]["/api/v3/klines"]
    assert pages_after["count"] - pages_before.get("count", 0) >= 18  # 2 pairs x 9 pages of 1000 candles
    for pair in ("BTC_USDT", "ETH_USDT"):
        data = pd.read_feather(userdir / "data" / "binance" / f"{pair}-5m.feather")
        first, last = data["date"].iloc[0].timestamp(), data["date"].iloc[-1].timestamp()
        # From midnight 30 days ago up to the last closed candle: 30 x 288 candles and today's.
        assert 30 * 288 <= len(data) <= 31 * 288
        assert started - 31 * 86_400 <= first <= started - 30 * 86_400
        assert started - 600 <= last <= started
        assert (data["date"].diff().dropna() == pd.Timedelta(minutes=5)).all()
        assert (data["low"] <= data[["open", "close"]].min(axis=1)).all()
        assert (data["high"] >= data[["open", "close"]].max(axis=1)).all()
