"""A real gateway app (uvicorn), a real simulator process, real Valkey, real Freqtrade bots.

Commands go onto the gateway's command stream with ``shared.bus.Publisher``, as the management
server sends them; events are read back from ``freqfleet:events`` with XRANGE. Tokens are signed
with a key ring whose JWKS a tiny app serves, which the gateway fetches like the management server's.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from pydantic import SecretStr

from management_server.security.keys import KeyRing, SigningKey
from management_server.security.tokens import sign_token
from shared.auth import TokenType
from shared.bus.messages import (
    BotSpec,
    EmergencyStop,
    EmergencyStopData,
    Envelope,
    ForceExit,
    ForceExitData,
    PauseBot,
    PauseBotData,
    ResumeBot,
    ResumeBotData,
    StartBot,
    StartBotData,
    StopBot,
    StopBotData,
    UpdateConfig,
    UpdateConfigData,
    decode,
)
from shared.bus.publisher import ENVELOPE_FIELD, Publisher, entry_fields, with_request_correlation
from shared.bus.signing import CommandSigner
from shared.bus.streams import EVENTS_STREAM, commands_stream
from shared.settings import Environment
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for, serve
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER_MARKET, make_spec
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app

E = TypeVar("E", bound=Envelope)

CRASHING_STRATEGY = '''"""A strategy whose module fails when Freqtrade imports it."""

from freqtrade.strategy import IStrategy

raise RuntimeError("CrashAtStart fails on purpose when it is imported")


class CrashAtStart(IStrategy):
    timeframe = "1m"
'''


def spec_for(pairs: tuple[str, ...] = ("BTC/USDT",), **overrides: Any) -> BotSpec:
    """AlwaysEnter (market orders) on ``pairs``, one trade per pair."""
    return make_spec(pairs, **({"strategy_source": ALWAYS_ENTER_MARKET} | overrides))


def crashing_spec() -> BotSpec:
    return make_spec(strategy_class="CrashAtStart", strategy_source=CRASHING_STRATEGY)


HANGING_STRATEGY = '''"""Its analysis never returns: the trading loop hangs while the REST API still answers."""

import time

from freqtrade.strategy import IStrategy


class HangsInItsLoop(IStrategy):
    timeframe = "1m"
    minimal_roi = {"0": 100.0}
    stoploss = -0.5
    startup_candle_count = 0

    def populate_indicators(self, dataframe, metadata):
        time.sleep(3600)
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe
'''


def hanging_spec() -> BotSpec:
    return make_spec(strategy_class="HangsInItsLoop", strategy_source=HANGING_STRATEGY)


@dataclass
class Tokens:
    keys: KeyRing
    jwks_url: str

    def mint(self, role: str, scopes: frozenset[str] | None = None) -> str:
        default = {"admin": {"read", "trade", "admin"}, "user": {"read", "trade"}, "service": {"read"}}[role]
        token, _, _ = sign_token(
            self.keys,
            issuer="freqfleet",
            audience="freqfleet",
            subject=uuid.uuid4(),
            role=role,
            token_type=TokenType.access,
            lifetime=timedelta(minutes=15),
            version=0,
            scopes=frozenset(default) if scopes is None else scopes,
        )
        return token


def new_keys() -> KeyRing:
    return KeyRing([SigningKey.of(Ed25519PrivateKey.generate())])


# The tests' stand-in for the management server's command-signing key: Bus signs with it, every stand-in
# management server (jwks_app, the models tests' authority) publishes it.
COMMAND_KEYS = new_keys()
COMMAND_SIGNER = CommandSigner(COMMAND_KEYS.active.private, COMMAND_KEYS.active.kid)


def serve_command_keys(app: FastAPI) -> None:
    @app.get("/.well-known/command-keys.json")
    async def command_keys() -> dict[str, Any]:
        return COMMAND_KEYS.jwks()


def jwks_app(keys: KeyRing) -> FastAPI:
    """Serves the key ring's public keys where the gateway looks for the management server's."""
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return keys.jwks()

    serve_command_keys(app)
    return app


@pytest_asyncio.fixture(loop_scope="session", scope="package")
async def tokens() -> AsyncIterator[Tokens]:
    keys = new_keys()
    async with serve(jwks_app(keys)) as url:
        yield Tokens(keys, url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def settings_for(
    data_dir: Path, redis_url: str, simulator: SimulatorProcess, tokens: Tokens, **overrides: Any
) -> GatewaySettings:
    start = random.randrange(20_000, 60_000, 100)
    fields: dict[str, Any] = {
        "env": Environment.test,
        "data_dir": data_dir,
        "redis_url": SecretStr(redis_url),
        "gateway_id": f"gw-fleet-{uuid.uuid4().hex[:8]}",
        "management_url": tokens.jwks_url,
        "simulator_url": simulator.url,
        "bot_port_range_start": start,
        "bot_port_range_end": start + 19,
        "status_interval": 0.5,
        "bot_process_throttle_secs": 1,
        "heartbeat_interval": 1.0,
        "bot_start_timeout": 60.0,
        "bot_stop_grace": 10.0,
        "bot_restart_backoff_initial": 0.2,
        "bot_restart_backoff_max": 0.5,
    }
    return GatewaySettings(**(fields | overrides))


def bots_root(settings: GatewaySettings) -> Path:
    return settings.gateway_data_dir / "bots"


@pytest.fixture
def cleanup() -> Iterator[list[GatewaySettings]]:
    """Settings registered here have every Freqtrade process of their bots folder killed after the test."""
    used: list[GatewaySettings] = []
    try:
        yield used
    finally:
        for settings in used:
            for orphan in find_orphans(bots_root(settings)):  # by command line: only our bots
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(orphan.pid, signal.SIGKILL)


@dataclass
class Gateway:
    app: FastAPI
    url: str
    http: httpx.AsyncClient
    settings: GatewaySettings


@asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    app = create_app(settings)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        yield Gateway(app, url, http, settings)


class Bus:
    """The management server's side of the bus, for one gateway: commands out, events in."""

    def __init__(self, redis_url: str, gateway_id: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.publisher = Publisher(self.redis)
        self.gateway_id = gateway_id

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def send(self, command: E, signer: CommandSigner | None = COMMAND_SIGNER) -> E:
        """Publish ``command`` signed as the management server's relay signs it (``signer=None``: unsigned)."""
        stream = commands_stream(self.gateway_id)
        fields = entry_fields(with_request_correlation(command))
        if signer is not None:
            fields |= signer.fields(stream, fields[ENVELOPE_FIELD])
        await self.publisher.publish_raw(stream, fields)
        return command

    async def events(self) -> list[Envelope]:
        entries = await self.redis.xrange(EVENTS_STREAM)
        return [decode(fields[b"envelope"]) for _, fields in entries]

    async def of(self, kind: type[E], bot_id: uuid.UUID | None = None) -> list[E]:
        return [
            e
            for e in await self.events()
            if isinstance(e, kind) and (bot_id is None or getattr(e.data, "bot_id", None) == bot_id)
        ]

    async def wait(
        self,
        kind: type[E],
        where: Callable[[E], object] = lambda e: True,
        *,
        bot_id: uuid.UUID | None = None,
        timeout: float = 60,
        what: str | None = None,
    ) -> E:
        async def found() -> E | None:
            return next((e for e in await self.of(kind, bot_id) if where(e)), None)

        return await async_wait_for(found, timeout=timeout, interval=0.1, what=what or kind.__name__)

    async def answer(self, command: Envelope, timeout: float = 30) -> Envelope:
        """The COMMAND_ACCEPTED or COMMAND_REJECTED of ``command``."""

        async def found() -> Envelope | None:
            for e in await self.events():
                if e.type in ("COMMAND_ACCEPTED", "COMMAND_REJECTED") and getattr(e.data, "command_id", None) == (
                    command.event_id
                ):
                    return e
            return None

        return await async_wait_for(found, timeout=timeout, interval=0.05, what=f"the answer to {command.type}")


@pytest_asyncio.fixture(loop_scope="session")
async def bus_factory(redis_url: str) -> AsyncIterator[Callable[[str], Bus]]:
    made: list[Bus] = []

    def make(gateway_id: str) -> Bus:
        bus = Bus(redis_url, gateway_id)
        made.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in made:
            await bus.aclose()


# ------------------------------------------------------------------ commands as the management server sends them


def start(bot_id: uuid.UUID, generation: int, spec: BotSpec | None = None) -> StartBot:
    return StartBot(
        source="management",
        correlation_id=f"test-{uuid.uuid4().hex[:8]}",
        data=StartBotData(bot_id=bot_id, generation=generation, spec=spec or spec_for()),
    )


def stop(bot_id: uuid.UUID, generation: int) -> StopBot:
    return StopBot(source="management", data=StopBotData(bot_id=bot_id, generation=generation, reason="test stop"))


def pause(bot_id: uuid.UUID, generation: int) -> PauseBot:
    return PauseBot(source="management", data=PauseBotData(bot_id=bot_id, generation=generation))


def resume(bot_id: uuid.UUID, generation: int) -> ResumeBot:
    return ResumeBot(source="management", data=ResumeBotData(bot_id=bot_id, generation=generation))


def force_exit(bot_id: uuid.UUID, generation: int, trade_id: int | str = "all") -> ForceExit:
    return ForceExit(
        source="management",
        data=ForceExitData(bot_id=bot_id, generation=generation, trade_id=trade_id),  # type: ignore[arg-type]
    )


def update_config(bot_id: uuid.UUID, generation: int, spec: BotSpec) -> UpdateConfig:
    return UpdateConfig(source="management", data=UpdateConfigData(bot_id=bot_id, generation=generation, spec=spec))


def emergency(data: EmergencyStopData) -> EmergencyStop:
    return EmergencyStop(source="management", data=data)


def db_trades(db: Path) -> list[tuple[int, str, int, str | None]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return list(conn.execute("SELECT id, pair, is_open, exit_reason FROM trades ORDER BY id"))
