"""The relay's HTTP server: bots' market-data requests in, one budgeted, cached, coalesced stream out per exchange.

A bot reaches it at ``http://127.0.0.1:<port>/x/<exchange>/<bot_id>`` + the exchange's API prefix
(``/api/v3/klines?...``): the bot's id only counts its requests and gives it its turn in the queue. Only the
exchange's API prefix is forwarded (the relay is not an open proxy). Public ``GET`` requests are answered from the
cache when the answer is still true, else one request goes upstream for all bots asking the same; private (signed)
requests and anything not cacheable go upstream as they are, in the same budget.

``/_relay/stats`` gives its numbers (per exchange and per bot): its keeper reads them every second as its health
check, and the gateway puts them in its heartbeat, its bot list and its ``/metrics``.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.logging import get_logger
from trading_gateway.relay.adapters import Adapter
from trading_gateway.relay.budget import Budget, Refused
from trading_gateway.relay.cache import Answer, AnswerCache, cache_key

log = get_logger(__name__)

PASSED_HEADERS = ("content-type", "retry-after")
HOP_BY_HOP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)
UPSTREAM_TIMEOUT = 10.0
OUTCOME_FIELDS = {
    "hit": "hits",
    "miss": "misses",
    "coalesced": "coalesced",
    "private": "private",
    "refused": "refused",
    "error": "errors",
}


@dataclass
class BotNumbers:
    requests: int = 0
    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    private: int = 0
    refused: int = 0
    errors: int = 0
    weight: int = 0  # weight sent upstream on its behalf
    queue_wait_seconds: float = 0.0


class Upstream:
    """One exchange: its adapter, base URL, client and budget."""

    def __init__(self, exchange: str, adapter: Adapter, base_url: str, budget: Budget) -> None:
        self.exchange = exchange
        self.adapter = adapter
        self.base_url = base_url.rstrip("/")
        self.budget = budget
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=UPSTREAM_TIMEOUT,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self.requests = 0


class Relay:
    def __init__(self, upstreams: dict[str, Upstream], *, cache_bytes: int, gateway_id: str) -> None:
        self.upstreams = upstreams
        self.cache = AnswerCache(cache_bytes)
        self.gateway_id = gateway_id
        self.started_at = time.time()
        self.bots: dict[tuple[str, str], BotNumbers] = defaultdict(BotNumbers)

    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            yield
            for upstream in self.upstreams.values():
                await upstream.client.aclose()

        return Starlette(
            routes=[
                Route("/_relay/stats", self.stats_route, methods=["GET"]),
                Route(
                    "/x/{exchange}/{bot_id}/{rest:path}",
                    self.relay,
                    methods=["GET", "POST", "PUT", "DELETE"],
                ),
            ],
            lifespan=lifespan,
        )

    def stats(self) -> dict[str, Any]:
        exchanges = {}
        for name, upstream in self.upstreams.items():
            numbers = [n for (e, _), n in self.bots.items() if e == name]
            exchanges[name] = {
                **upstream.budget.view(),
                "upstream_requests": upstream.requests,
                **{k: sum(getattr(n, k) for n in numbers) for k in ("requests", "hits", "misses", "coalesced")},
            }
        return {
            "gateway_id": self.gateway_id,
            "started_at": self.started_at,
            "exchanges": exchanges,
            "cache": {"entries": len(self.cache), "bytes": self.cache.bytes, "max_bytes": self.cache.max_bytes},
            "bots": {bot: {"exchange": e, **asdict(n)} for (e, bot), n in sorted(self.bots.items())},
        }

    async def stats_route(self, _: Request) -> Response:
        return _json(self.stats())

    def _count(self, exchange: str, bot: str, outcome: str) -> None:
        """One request of ``bot`` answered so (hit, miss, coalesced, private, refused, error)."""
        numbers = self.bots[(exchange, bot)]
        numbers.requests += 1
        field = OUTCOME_FIELDS[outcome]
        setattr(numbers, field, getattr(numbers, field) + 1)

    async def _finish(self, exchange: str, bot: str, call: Awaitable[tuple[Answer, str]]) -> Response:
        """The bot's answer from ``call`` (an answer and how it was had), or the relay's refusal or error."""
        try:
            answer, outcome = await call
        except Refused as exc:
            self._count(exchange, bot, "refused")
            return _refused(exc)
        except httpx.HTTPError as exc:
            self._count(exchange, bot, "error")
            return _error(502, f"the exchange did not answer the relay: {type(exc).__name__}")
        self._count(exchange, bot, outcome)
        return _answer(answer, outcome)

    async def relay(self, request: Request) -> Response:
        exchange, bot, rest = (request.path_params[k] for k in ("exchange", "bot_id", "rest"))
        upstream = self.upstreams.get(exchange)
        path = "/" + rest
        if upstream is None or not path.startswith(upstream.adapter.prefix + "/"):
            return _error(404, f"the relay forwards only {exchange!r}'s API, and this is not it: {path}")
        adapter = upstream.adapter
        name = path.removeprefix(adapter.prefix + "/")
        params = dict(request.query_params)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if adapter.is_private(request.method, params, headers):
            body = await request.body()
            sent = (request.method, path, request.url.query, headers, body)
            return await self._finish(exchange, bot, self._sent(upstream, bot, "private", sent))
        if adapter.lifetime(name, params, int(time.time() * 1000)) is None:  # not kept: straight through
            sent = ("GET", path, request.url.query, {}, b"")
            return await self._finish(exchange, bot, self._sent(upstream, bot, "miss", sent))
        key = cache_key(path, params)
        kept = self.cache.get(key)
        if kept is not None:
            self._count(exchange, bot, "hit")
            return _answer(kept, "hit")

        async def fetch() -> Answer:
            answer = await self._upstream(upstream, bot, "GET", path, request.url.query, {}, b"")
            if answer.status == 200:
                seconds = adapter.lifetime(name, params, int(time.time() * 1000))
                if seconds:
                    self.cache.put(key, answer, seconds)
            return answer

        async def kept_or_fetched() -> tuple[Answer, str]:
            answer, shared = await self.cache.coalesced(key, fetch)
            return answer, "coalesced" if shared else "miss"

        return await self._finish(exchange, bot, kept_or_fetched())

    async def _sent(
        self,
        upstream: Upstream,
        bot: str,
        outcome: str,
        request: tuple[str, str, str, dict[str, str], bytes],
    ) -> tuple[Answer, str]:
        """A request that is not kept (method, path, query, headers, body), sent as it is inside the budget."""
        return await self._upstream(upstream, bot, *request), outcome

    async def _upstream(
        self,
        upstream: Upstream,
        bot: str,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Answer:
        """One request to the exchange, inside the budget (:class:`Refused` when it may not go)."""
        adapter = upstream.adapter
        params = dict(httpx.QueryParams(query))
        weight = adapter.weight(path.removeprefix(adapter.prefix + "/"), params)
        waited = await upstream.budget.acquire(bot, weight)
        numbers = self.bots[(upstream.exchange, bot)]
        numbers.queue_wait_seconds += waited
        numbers.weight += weight
        forwarded = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
        upstream.requests += 1
        response = await upstream.client.request(
            method, path + ("?" + query if query else ""), headers=forwarded, content=body or None
        )
        used_raw = response.headers.get(adapter.used_weight_header)
        retry_raw = response.headers.get("retry-after")
        upstream.budget.heard(
            response.status_code,
            int(used_raw) if used_raw and used_raw.isdigit() else None,
            float(retry_raw) if retry_raw and retry_raw.replace(".", "", 1).isdigit() else None,
        )
        if response.status_code in (418, 429):
            log.warning(
                "the exchange refused the relay",
                exchange=upstream.exchange,
                status=response.status_code,
                retry_after=retry_raw,
                used_weight=used_raw,
            )
        if response.status_code == 200:
            stated = adapter.limit_in(path.removeprefix(adapter.prefix + "/"), response.content)
            if stated is not None and stated != upstream.budget.limit:
                log.info("the exchange states its weight limit", exchange=upstream.exchange, limit=stated)
                upstream.budget.limit = stated
        passed = tuple(
            (k, response.headers[k]) for k in (*PASSED_HEADERS, adapter.used_weight_header) if k in response.headers
        )
        return Answer(response.status_code, passed, response.content)


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"code": -1, "msg": f"Freqfleet relay: {message}"}, status)


def _refused(exc: Refused) -> Response:
    response = _json({"code": -1003, "msg": f"Freqfleet relay: {exc.reason}"}, exc.status)
    response.headers["retry-after"] = str(max(1, round(exc.retry_after)))
    response.headers["x-freqfleet-relay"] = "refused"  # answered here: the exchange never saw it
    return response


def _answer(answer: Answer, outcome: str) -> Response:
    response = Response(answer.body, status_code=answer.status)
    for k, v in answer.headers:
        response.headers[k] = v
    response.headers["x-freqfleet-relay"] = outcome
    return response
