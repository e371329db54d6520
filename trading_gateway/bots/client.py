"""An async client of one Freqtrade bot's REST API (``/api/v1``) on loopback.

Decisions:

- HTTP Basic auth with the bot's per-bot credentials on every call (Freqtrade's JWT login buys
  nothing on loopback and would add a token to keep fresh). ``/ping`` is the only public route.
- Short timeouts (2 s to connect, 10 s to read by default; ``forceexit`` gets longer, as it
  talks to the exchange for every open trade). ``trust_env=False``: a proxy from the environment
  must never see loopback traffic carrying the bot's password.
- One TLS context shared by every client: httpx builds one per client by default (loading the CA
  bundle: ~45 ms of CPU each), and an emergency stop opens a client per bot at once, so 20 bots
  cost a second of event loop before the last ``stopentry`` went out. The bots' APIs are plain HTTP
  on loopback: the context is never used, but it stays a verifying one.
- Every failure is a :class:`BotApiError` with the HTTP status (``None`` when the bot did not
  answer at all) and a message a person can read; :class:`BotUnreachable` and
  :class:`BotAuthRefused` are the two cases callers branch on (not up yet / someone else's API).
- Small answers are validated into pydantic models (``ShowConfig``, ``BotHealth``, ``LogLine``) so
  drift in Freqtrade's shapes surfaces as a ``BotApiError`` here, not as a ``KeyError`` later;
  the big ones (open trades, profit, trade history) stay dicts, which is what the bus carries.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
FORCEEXIT_TIMEOUT = httpx.Timeout(30.0, connect=2.0)


class BotApiError(Exception):
    """A call to a bot's REST API failed; ``status`` is the HTTP status, None when nothing answered."""

    def __init__(self, message: str, *, status: int | None, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.path = path

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        code = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{where}{code}{self.message}"


class BotUnreachable(BotApiError):
    """Nothing answered on the bot's port (refused, timed out, connection dropped)."""


class BotAuthRefused(BotApiError):
    """The API on the port refused our credentials: it is not our bot, or not this incarnation of it."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ShowConfig(_Loose):
    """The parts of ``/show_config`` we rely on (the rest is kept as extra fields)."""

    bot_name: str
    state: str
    version: str
    dry_run: bool
    strategy: str
    stake_currency: str
    exchange: str
    timeframe: str | None = None
    max_open_trades: float = 0  # -1 means unlimited


class BotHealth(_Loose):
    """``/health``: when the trading loop last ran (all None before its first round)."""

    last_process: datetime | None = None
    last_process_ts: int | None = None
    bot_start: datetime | None = None
    bot_startup: datetime | None = None


@dataclass(frozen=True)
class LogLine:
    logged_at: str
    logger: str
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.logged_at} - {self.logger} - {self.level} - {self.message}"


@dataclass(frozen=True)
class BotSnapshot:
    """What a status poll reads: Freqtrade's state, the open trades, the profit summary, the loop's health."""

    state: str
    open_trades: list[dict[str, Any]]
    profit: dict[str, Any]
    health: BotHealth
    read_at: datetime = field(compare=False, default_factory=lambda: datetime.now(UTC))


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, Mapping):
        for key in ("error", "detail"):
            if key in body:
                return str(body[key])[:500]
    return str(body)[:300]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default (verifying) context, built once (see the module's docstring)."""
    return httpx.create_ssl_context()


class FreqtradeClient:
    """One bot's REST API. Use as ``async with FreqtradeClient(port, user, password) as api: ...``."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        *,
        host: str = "127.0.0.1",
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self._http = httpx.AsyncClient(
            base_url=f"{self.base_url}/api/v1",
            auth=httpx.BasicAuth(username, password),
            timeout=timeout,
            trust_env=False,
            follow_redirects=False,
            verify=_tls_context(),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"FreqtradeClient({self.base_url})"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: httpx.Timeout | None = None,
        auth: bool = True,
    ) -> Any:
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        if not auth:
            extra["auth"] = None
        try:
            response = await self._http.request(method, path, params=params, json=json, **extra)
        except httpx.TimeoutException as exc:
            raise BotUnreachable(f"no answer in time ({type(exc).__name__})", status=None, path=path) from None
        except httpx.TransportError as exc:
            raise BotUnreachable(f"{type(exc).__name__}: {exc}", status=None, path=path) from None
        if response.status_code == 401:
            raise BotAuthRefused("credentials refused", status=401, path=path)
        if response.status_code >= 400:
            raise BotApiError(_error_text(response), status=response.status_code, path=path)
        try:
            return response.json()
        except ValueError:
            raise BotApiError("answer is not JSON", status=response.status_code, path=path) from None

    async def _status_message(self, path: str) -> str:
        body = await self._request("POST", path)
        if not isinstance(body, Mapping) or "status" not in body:
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path=path)
        return str(body["status"])

    # ------------------------------------------------------------------ reads

    async def ping(self) -> bool:
        """True when something on the port answers Freqtrade's public ``/ping`` (not proof it is our bot)."""
        body = await self._request("GET", "/ping", auth=False)
        return isinstance(body, Mapping) and body.get("status") == "pong"

    async def show_config(self) -> ShowConfig:
        body = await self._request("GET", "/show_config")
        try:
            return ShowConfig.model_validate(body)
        except ValidationError as exc:
            raise BotApiError(f"unexpected show_config: {exc.errors()[:3]}", status=200, path="/show_config") from None

    async def version(self) -> str:
        body = await self._request("GET", "/version")
        if not isinstance(body, Mapping) or not isinstance(body.get("version"), str):
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path="/version")
        return str(body["version"])

    async def health(self) -> BotHealth:
        body = await self._request("GET", "/health")
        try:
            return BotHealth.model_validate(body)
        except ValidationError as exc:
            raise BotApiError(f"unexpected health: {exc.errors()[:3]}", status=200, path="/health") from None

    async def status(self) -> list[dict[str, Any]]:
        """The open trades (Freqtrade answers an empty list while the bot is stopped)."""
        body = await self._request("GET", "/status")
        if not isinstance(body, list):
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path="/status")
        return [dict(t) for t in body]

    async def profit(self) -> dict[str, Any]:
        body = await self._request("GET", "/profit")
        if not isinstance(body, Mapping):
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path="/profit")
        return dict(body)

    async def trades(self, limit: int = 500, offset: int = 0) -> dict[str, Any]:
        """Closed trades, by id: ``{"trades": [...], "trades_count", "offset", "total_trades"}`` (open ones: status)."""
        body = await self._request("GET", "/trades", params={"limit": limit, "offset": offset})
        if not isinstance(body, Mapping) or not isinstance(body.get("trades"), list):
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path="/trades")
        return dict(body)

    async def logs(self, limit: int = 50) -> list[LogLine]:
        """The last ``limit`` lines of the bot's in-memory log buffer (Freqtrade keeps 1,000)."""
        body = await self._request("GET", "/logs", params={"limit": limit})
        try:
            rows = body["logs"]
            return [LogLine(str(r[0]), str(r[2]), str(r[3]), str(r[4])) for r in rows]
        except (KeyError, IndexError, TypeError):
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path="/logs") from None

    async def pair_candles(self, pair: str, timeframe: str, limit: int = 1) -> list[dict[str, Any]]:
        """The newest ``limit`` rows of the pair's analysed dataframe (FreqAI's outputs included), as dicts."""
        path = "/pair_candles"
        body = await self._request("GET", path, params={"pair": pair, "timeframe": timeframe, "limit": limit})
        try:
            columns = [str(c) for c in body["columns"]]
            return [dict(zip(columns, row, strict=True)) for row in body["data"]]
        except (KeyError, TypeError, ValueError):
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path=path) from None

    async def snapshot(self) -> BotSnapshot:
        """State, open trades, profit and health, read concurrently (what a status poll publishes)."""
        config, open_trades, profit, health = await asyncio.gather(
            self.show_config(), self.status(), self.profit(), self.health()
        )
        return BotSnapshot(state=config.state, open_trades=open_trades, profit=profit, health=health)

    # ------------------------------------------------------------------ control

    async def start(self) -> str:
        """Trade again after ``stop`` or ``stopentry`` (state ``running``)."""
        return await self._status_message("/start")

    async def stop(self) -> str:
        """Stop the trading loop (state ``stopped``); the process and its API keep running."""
        return await self._status_message("/stop")

    async def stopentry(self) -> str:
        """No new entries, open trades still managed (state ``paused``; also from ``stopped``)."""
        return await self._status_message("/stopentry")

    async def reload_config(self) -> str:
        """Re-read config.json and re-initialise the worker in the same process."""
        return await self._status_message("/reload_config")

    async def forceexit(self, trade_id: int | Literal["all"], ordertype: Literal["market", "limit"] = "market") -> str:
        """Exit one open trade or all of them (fails once the bot is stopped: use ``stopentry`` first)."""
        path = "/forceexit"
        body = await self._request(
            "POST", path, json={"tradeid": str(trade_id), "ordertype": ordertype}, timeout=FORCEEXIT_TIMEOUT
        )
        if not isinstance(body, Mapping) or "result" not in body:
            raise BotApiError(f"unexpected answer {str(body)[:200]}", status=200, path=path)
        return str(body["result"])
