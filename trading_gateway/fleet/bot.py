"""One bot as this gateway's fleet sees it: its record in memory (``ManagedBot``), its actual states, what
``GET /api/v1/bots`` shows of it (``BotView``), and what is kept in its folder besides Freqtrade's files (its
spec, whether it failed). Nothing here starts or stops anything: :mod:`.supervisor` does, for :mod:`.service`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from pydantic import ValidationError

from shared.bus.messages import BotSpec
from shared.files import atomic_write, open_read_nofollow
from shared.logging import get_logger
from shared.watchdog import EXIT_LEASE
from trading_gateway.bots.client import FreqtradeClient
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.process import BotProcess
from trading_gateway.bots.state import Desired
from trading_gateway.fleet.trades import TradeReporter

log = get_logger(__name__)

SPEC_FILE = "spec.json"
SUPERVISION_FILE = "supervision.json"
LOG_LINES = 50
BOT_EVENTS = uuid.UUID("0b7e6f0e-3c1a-4f53-8a11-5d2c7f9a4e20")  # namespace of deterministic lifecycle event ids
RUNNING_STATES = (Desired.running, Desired.paused)


class Actual(StrEnum):
    stopped = "stopped"
    starting = "starting"  # being started, or waiting to be restarted after a crash
    running = "running"
    paused = "paused"
    stopping = "stopping"
    failed = "failed"  # crash loop, or a spec that can't run: down until a new START
    halted = "halted"  # emergency-stopped: down until a new START


class CommandRefused(Exception):
    """A command that can't be applied; the message says why, in words a person can act on."""


@dataclass(eq=False)
class ManagedBot:
    """One bot as the fleet sees it (the supervisor task mutates the process side)."""

    uuid: uuid.UUID
    files: BotFiles
    desired: Desired
    generation: int
    spec: BotSpec | None
    reporter: TradeReporter
    process: BotProcess | None = None
    api: FreqtradeClient | None = None
    actual: Actual = Actual.stopped
    failed_reason: str | None = None
    last_error: str | None = None
    freqtrade_version: str | None = None
    freqtrade_state: str | None = None
    last_status_at: datetime | None = None
    open_trades: int = 0
    restart_requested: bool = False
    stop_reason: str | None = None
    kill_reason: str | None = None  # end the process and count a crash (hung, or not answering at adoption)
    launching: bool = False
    attempt: int = 0  # restarts since the last good health, for the backoff
    next_start_at: float = 0.0  # monotonic time before which no restart happens
    healthy_since: float | None = None
    unanswered_since: float | None = None
    correlation_id: str | None = None
    market_url: str | None = None  # the simulator's or the relay's URL its process was started with
    settled_generation: int = -1  # the generation of the last command a supervision step has acted on
    in_emergency: bool = False  # being emergency-stopped: no supervisor may be (re)started for it meanwhile
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None

    @property
    def bot_id(self) -> str:
        return str(self.uuid)


@dataclass(frozen=True)
class BotView:
    """What ``GET /api/v1/bots`` shows of a bot (never a credential)."""

    bot_id: uuid.UUID
    generation: int
    desired: str
    actual: str
    freqtrade_state: str | None
    pid: int | None
    port: int | None
    started_at: datetime | None
    freqtrade_version: str | None
    launcher: str | None  # "exec" or "fork": how its process started
    last_status_at: datetime | None
    last_status_age_seconds: float | None
    open_trades: int
    crash_count: int
    last_error: str | None
    market_data: str | None = None  # "relay", or "direct" and why; None without a process
    relay: dict[str, float] | None = None  # its numbers at the relay (hits, misses, coalesced, weight, queue wait)


def lifecycle_id(bot: ManagedBot, kind: str, process: BotProcess) -> uuid.UUID:
    """The same id for the same news about the same process (a re-announced start is a duplicate)."""
    return uuid.uuid5(BOT_EVENTS, f"{bot.bot_id}:{kind}:{process.pid}:{process.create_time:.2f}")


def describe_exit(exit_code: int | None) -> str:
    if exit_code is None:
        return "its process ended (exit code unknown: it was not started by this gateway process)"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"its process was killed by {name}"
    if exit_code == EXIT_LEASE:
        return (
            f"its process ended itself (exit code {exit_code}): this gateway's lease on it was not renewed in time "
            "(its lease watchdog); it starts again once a renewal says the bot is still held here"
        )
    return f"its process exited with code {exit_code}"


def describe_error(exc: BaseException) -> str:
    """An error in words, without the input values pydantic puts in its messages (they may be secrets)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
        )
    return str(exc)


def storable(spec: BotSpec) -> BotSpec:
    """The spec as the gateway keeps it: a dry-run bot's exchange keys are dropped (never on disk)."""
    return spec.model_copy(update={"credentials": None}) if spec.dry_run and spec.credentials is not None else spec


def save_spec(bot: ManagedBot, spec: BotSpec) -> None:
    bot.files.prepare()
    atomic_write(bot.files.meta / SPEC_FILE, spec.model_dump_json().encode())  # 0600: may hold exchange keys


def load_spec(bot: ManagedBot) -> BotSpec | None:
    path = bot.files.meta / SPEC_FILE
    try:
        return BotSpec.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValidationError, ValueError) as exc:
        log.error("bot spec unreadable", bot_id=bot.bot_id, path=str(path), error=describe_error(exc)[:300])
        return None


def save_failed(bot: ManagedBot) -> None:
    path = bot.files.meta / SUPERVISION_FILE
    if not bot.files.folder.exists():
        return
    atomic_write(path, json.dumps({"failed": bot.failed_reason}).encode())


def load_failed(bot: ManagedBot) -> str | None:
    try:
        doc: Any = json.loads((bot.files.meta / SUPERVISION_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    failed = doc.get("failed") if isinstance(doc, dict) else None
    return str(failed) if failed else None


def log_tail(bot: ManagedBot) -> list[str]:
    for path in (bot.files.log, bot.files.console_log):
        try:
            with open_read_nofollow(path) as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:  # missing, or not a regular file (never followed)
            continue
        if lines:
            return lines[-LOG_LINES:]
    return []


def secrets_of(bot: ManagedBot) -> list[str]:
    """The bot's secrets as they may appear in its files (to scrub log lines before they leave)."""
    found: list[str] = []  # the spec holds only sealed credentials: the config has them in the clear
    try:
        config = bot.files.read_config()
    except (OSError, ValueError):
        config = {}
    api = config.get("api_server", {}) if isinstance(config, dict) else {}
    exchange = config.get("exchange", {}) if isinstance(config, dict) else {}
    sections = ((api, ("password", "jwt_secret_key", "ws_token")), (exchange, ("key", "secret", "password")))
    for section, keys in sections:
        if isinstance(section, dict):
            found += [str(section[k]) for k in keys if section.get(k)]
    return [s for s in found if len(s) >= 6]


def caused_by(bot: ManagedBot) -> None:
    """Log what the supervisor does now (a start, a stop) under the correlation id of the command that asked
    for it; the supervisor's step unbinds it, so the polls that follow are not attributed to that request."""
    if bot.correlation_id:
        structlog.contextvars.bind_contextvars(correlation_id=bot.correlation_id)


def scrub(line: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, "***")
    return line
