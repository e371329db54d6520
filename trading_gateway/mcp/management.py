"""The management server's REST API, called with the MCP caller's own token.

The management server holds desired state, ownership and the audit log, so every tool that changes
desired state (start, stop, pause, resume, force exit, emergency stop, model deploys) is a call to its
API **as the caller**: it checks the caller's role, scopes and ownership and audits the action as it
does for any REST client. Reads that need ownership ask it too (``GET /api/v1/bots`` lists exactly
the caller's bots; an admin's lists all). The call carries the tool call's correlation id as
``X-Request-ID``, so the management server's rows and log lines for it share the id of the MCP
call's own audit row.

Answers become :class:`ToolProblem` messages: the management server's own ``detail`` (written for
people) when it refused, and a plain sentence when it failed or could not be reached. A 404 or 405
whose ``detail`` is FastAPI's bare ``"Not Found"`` / ``"Method Not Allowed"`` means the route itself
is missing (a management server older than this gateway), which is said as such.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from asgi_correlation_id import correlation_id

from shared.gateway_requests import HEADER as GATEWAY_HEADER
from shared.gateway_requests import vouch
from shared.logging import get_logger
from trading_gateway.identity import GatewayIdentity
from trading_gateway.mcp.auth import Caller
from trading_gateway.mcp.errors import ToolDenied, ToolFailure, ToolProblem

log = get_logger(__name__)

API = "/api/v1"
PAGE = 1000
MAX_PAGES = 20
LIST_MAX = 4096  # callers whose lists are kept
UNREACHABLE = "The management server can't be reached right now; try again in a moment."
NO_LONGER_ACCEPTED = (
    "The management server no longer accepts this token (expired, revoked or logged out): reconnect with a fresh token."
)


def _detail(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, Mapping) else None
    if isinstance(detail, str):
        return detail[:500]
    if isinstance(detail, list):  # FastAPI's validation errors: where and what, no input values
        parts = []
        for error in detail[:5]:
            if isinstance(error, Mapping):
                where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "body"
                parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return "; ".join(parts)[:500] or None
    return None


class ManagementApi:
    def __init__(
        self,
        base_url: str,
        timeout: float,
        client: httpx.AsyncClient | None = None,
        identity: GatewayIdentity | None = None,
        list_seconds: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.list_seconds = list_seconds  # a caller's bot list is reused this long (FREQFLEET_MCP_LIST_SECONDS)
        self.timeout = timeout
        self.identity = identity  # signs each request (shared.gateway_requests): rate limits are the caller's
        # No proxy from the environment: these requests carry users' tokens.
        self.client = client or httpx.AsyncClient(
            base_url=self.base_url + API, timeout=httpx.Timeout(timeout, connect=5.0), trust_env=False
        )
        # The caller's bot list as last answered, by token: an agent polling list_bots asks the management server at
        # most once a list_seconds (its desired states; the live figures are this gateway's own, read each call).
        self._lists: dict[str, tuple[float, uuid.UUID, list[dict[str, Any]]]] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        caller: Caller,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The JSON answer of ``method API+path`` made with the caller's token, or a :class:`ToolProblem`."""
        if method != "GET":  # a change: the caller's next list is asked afresh
            self._forget(caller.subject)
        authorization = f"Bearer {caller.token}"
        headers = {"Authorization": authorization, "User-Agent": "freqfleet-gateway-mcp"}
        if self.identity is not None:
            headers[GATEWAY_HEADER] = vouch(self.identity.signing, self.identity.gateway_id, method, authorization)
        if (cid := correlation_id.get()) is not None:
            headers["X-Request-ID"] = cid
        try:
            response = await self.client.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException:
            log.warning("management server did not answer in time", method=method, path=path)
            raise ToolFailure(
                f"The management server did not answer within {self.timeout:g} s; the action may still "
                "happen: check with get_bot before trying again."
            ) from None
        except httpx.TransportError as exc:
            log.warning("management server unreachable", method=method, path=path, error=type(exc).__name__)
            raise ToolFailure(UNREACHABLE) from None
        if response.status_code < 400:
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                log.warning("management server answered something that is not JSON", path=path)
                raise ToolFailure("The management server answered something unexpected; try again.") from None
        raise self._problem(method, path, response)

    @staticmethod
    def _problem(method: str, path: str, response: httpx.Response) -> ToolProblem:
        code = response.status_code
        detail = _detail(response)
        if code == 401:
            return ToolDenied(NO_LONGER_ACCEPTED)
        if code in (404, 405) and detail in (None, "Not Found", "Method Not Allowed"):
            return ToolFailure(
                f"The management server does not offer this ({method} {API}{path.split('?')[0]} is missing): "
                "it needs to be upgraded to a version that does."
            )
        if code == 403:
            return ToolDenied(detail or "The management server refused this for your account.")
        if code == 429:
            return ToolFailure(detail or "Too many requests: wait a little and try again.")
        if code >= 500:
            log.warning("management server failed", method=method, path=path, status=code)
            return ToolFailure(f"The management server failed to handle this (HTTP {code}); try again shortly.")
        return ToolFailure(detail or f"The management server refused this (HTTP {code}).")

    # ------------------------------------------------------------------ the calls tools share

    async def bots(self, caller: Caller, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The caller's bots (an admin: everyone's), as the management server lists them: at most ``list_seconds``
        old unless ``fresh`` (and never older than a change this gateway made for the caller). Don't change it."""
        now = time.monotonic()
        kept = self._lists.get(caller.token)
        if kept is not None and kept[0] > now and not fresh:
            return kept[2]
        found = await self._all_bots(caller)
        if self.list_seconds <= 0:
            return found
        if len(self._lists) >= LIST_MAX:
            self._lists = {token: entry for token, entry in self._lists.items() if entry[0] > now}
            if len(self._lists) >= LIST_MAX:
                self._lists.clear()
        self._lists[caller.token] = (now + self.list_seconds, caller.subject, found)
        return found

    def _forget(self, subject: uuid.UUID) -> None:
        self._lists = {token: entry for token, entry in self._lists.items() if entry[1] != subject}

    async def _all_bots(self, caller: Caller) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(MAX_PAGES):
            rows = await self.request(caller, "GET", "/bots", params={"limit": PAGE, "offset": page * PAGE})
            if not isinstance(rows, list):
                raise ToolFailure("The management server answered something unexpected; try again.")
            found += [r for r in rows if isinstance(r, dict)]
            if len(rows) < PAGE:
                break
        return found

    async def bot(self, caller: Caller, bot_id: object) -> dict[str, Any]:
        """One of the caller's bots; 'No such bot.' for a bot that isn't theirs (as for one that doesn't exist)."""
        row = await self.request(caller, "GET", f"/bots/{bot_id}")
        if not isinstance(row, dict):
            raise ToolFailure("The management server answered something unexpected; try again.")
        return row
