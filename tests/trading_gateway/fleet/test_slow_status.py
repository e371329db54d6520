"""A bot whose status read hangs while its API answers is alive, not hung: under a ban of the IP, Freqtrade's
``/status`` prices open trades through its retrier, which sleeps between tries for minutes; ``show_config`` needs no
exchange and answers. Such a bot is not killed (a restarted bot could not even load its markets while banned);
one whose API answers nothing is (test_restarts.py)."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis

from shared.bus.publisher import Publisher
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from tests.trading_gateway.conftest import Tokens, bots_root, settings_for, spec_for
from trading_gateway.bus.events import EventPublisher
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.service import Fleet

pytestmark = pytest.mark.slow

# A stand-in for ``freqtrade trade`` whose /status never answers (its trades can't be priced) while the rest of its
# API does, each request in a thread of its own as Freqtrade's API serves its sync routes.
STUCK_STATUS = """#!{python}
import datetime, json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
config = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api/v1/status":
            time.sleep(3600)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        bodies = {{
            "/api/v1/ping": {{"status": "pong"}},
            "/api/v1/show_config": {{"bot_name": config["bot_name"], "state": "running", "version": "2026.9",
                "dry_run": True, "strategy": "AlwaysEnter", "stake_currency": "USDT", "exchange": "binance"}},
            "/api/v1/health": {{"last_process": now, "last_process_ts": int(time.time()), "bot_startup": now}},
            "/api/v1/profit": {{}},
        }}
        data = json.dumps(bodies.get(path, {{}})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", config["api_server"]["listen_port"]), Handler).serve_forever()
"""


async def test_a_bot_whose_status_hangs_while_its_api_answers_is_not_killed(
    simulator: SimulatorProcess, tokens: Tokens, redis_url: str, tmp_path: Path, cleanup: list[GatewaySettings]
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens, bot_unresponsive_timeout=1.0, relay=False)
    cleanup.append(settings)
    bot_id = uuid.uuid4()
    # The program in the bot's own folder: the only place its sandbox may execute besides Python's and ours.
    folder = bots_root(settings) / str(bot_id)
    folder.mkdir(parents=True)
    program = folder / "stuck-status-freqtrade"
    program.write_text(STUCK_STATUS.format(python=sys.executable))
    program.chmod(0o755)

    client = aioredis.Redis.from_url(redis_url)
    events = EventPublisher(Publisher(client), tmp_path / "outbox.jsonl")
    fleet = Fleet(settings, events, executable=program)
    await fleet.start()
    try:
        await fleet.start_bot(bot_id, 1, spec_for())
        bot = fleet.bots[str(bot_id)]
        await async_wait_for(lambda: _has_process(fleet, bot_id), timeout=60, what="the bot to start")
        process = bot.process
        assert process is not None
        # Watch it for 15 s: three polls, each failing after the client's 5 s, well past the 1 s a silent bot gets.
        watched = time.monotonic() + 15.0
        await async_wait_for(
            lambda: _over_or_replaced(fleet, bot_id, process.pid, watched), timeout=30, what="15 s of status reads"
        )
        assert bot.process is process, "the bot was killed and started again"
        assert psutil.Process(process.pid).is_running()
        assert fleet.supervisor.crash_count(bot) == 0
        assert bot.last_error is not None
        assert "its status can't be read" in bot.last_error
        assert "though its API answers: the exchange is slow or refusing this IP" in bot.last_error
    finally:
        await fleet.stop(stop_bots=True)
        await events.stop()
        await client.aclose()


async def _has_process(fleet: Fleet, bot_id: uuid.UUID) -> bool:
    return fleet.bots[str(bot_id)].process is not None


async def _over_or_replaced(fleet: Fleet, bot_id: uuid.UUID, pid: int, until: float) -> bool:
    process = fleet.bots[str(bot_id)].process
    return time.monotonic() >= until or process is None or process.pid != pid
