"""What routes are given, as typed dependencies (``Annotated[..., Depends(...)]``): the services the lifespan puts
on ``app.state`` (``main.py``), the client's address, and the audit log bound to the request.

Routes never read ``request.app.state`` themselves. Who is calling (``Reader``, ``Trader``, ``AdminPrincipal``)
and the audit log bound to them (``Audit``) are in :mod:`management_server.auth.deps`; the database session is
``db.SessionDep``; what a caller may see of a feature (``VisibleBot``, ``LockedBot``, ...) in the feature's
``deps.py``.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.analytics.cache import AnalyticsCache
from management_server.audit.models import AuditEntry, Outcome
from management_server.audit.service import Actor, AuditLog
from management_server.auth.service import AuthService
from management_server.botdb.service import Provisioner
from management_server.bots.markets import Markets
from management_server.bus.relay import OutboxRelay
from management_server.config import ManagementSettings
from management_server.dashboard.live import LiveFeed
from management_server.errors import Refused
from management_server.freqai.deploy import ModelRegistry
from management_server.freqai.tasks import TrainQueue
from management_server.gateways.client import GatewayClient
from management_server.gateways.signatures import EventSignatures
from management_server.security.crypto import MasterKeys
from management_server.security.keys import KeyRing
from management_server.security.login_throttle import LoginThrottle
from management_server.strategies.tasks import CheckQueue

T = TypeVar("T")


def _state(name: str, *, optional: bool = False) -> Callable[[Request], Awaitable[Any]]:
    """A dependency giving ``app.state.<name>`` (None when ``optional`` and the app has none)."""

    async def state(request: Request) -> Any:
        return getattr(request.app.state, name, None) if optional else getattr(request.app.state, name)

    state.__name__ = f"app_state_{name}"
    return state


SettingsDep = Annotated[ManagementSettings, Depends(_state("settings"))]
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(_state("sessionmaker"))]
RedisDep = Annotated[aioredis.Redis, Depends(_state("redis"))]
MasterKeysDep = Annotated[MasterKeys, Depends(_state("master_keys"))]
TokenKeysDep = Annotated[KeyRing, Depends(_state("keys"))]  # sign the tokens (/.well-known/jwks.json)
CommandKeysDep = Annotated[KeyRing, Depends(_state("command_keys"))]  # sign the commands (command-keys.json)
PasswordHasherDep = Annotated[PasswordHasher, Depends(_state("password_hasher"))]
AuthServiceDep = Annotated[AuthService, Depends(_state("auth"))]
LoginThrottleDep = Annotated[LoginThrottle, Depends(_state("login_throttle"))]
RelayDep = Annotated[OutboxRelay, Depends(_state("outbox_relay"))]  # wake() it once a command is committed
GatewayClientDep = Annotated[GatewayClient, Depends(_state("gateway_client"))]
EventSignaturesDep = Annotated[EventSignatures, Depends(_state("event_signatures"))]
MarketsDep = Annotated[Markets, Depends(_state("markets"))]
# makes and drops the bots' trade databases (None: FREQFLEET_BOT_DB=sqlite)
BotDatabasesDep = Annotated[Provisioner | None, Depends(_state("bot_databases", optional=True))]
LiveFeedDep = Annotated[LiveFeed, Depends(_state("live_feed"))]  # the dashboard's pushed updates
AnalyticsCacheDep = Annotated[AnalyticsCache, Depends(_state("analytics_cache"))]
ModelRegistryDep = Annotated[ModelRegistry, Depends(_state("model_registry"))]
# The task queues: None when this app has no Celery broker.
CheckQueueDep = Annotated[CheckQueue | None, Depends(_state("check_queue", optional=True))]
TrainQueueDep = Annotated[TrainQueue | None, Depends(_state("train_queue", optional=True))]


def built(cls: type[T]) -> Callable[..., Awaitable[T]]:
    """A dependency that builds the dataclass ``cls`` from its fields' dependencies, on the event loop:
    ``Depends(cls)`` would build it in FastAPI's thread pool (a class is a plain callable), a thread hop per request."""

    async def build(**fields: Any) -> T:
        return cls(**fields)

    build.__signature__ = inspect.signature(cls, eval_str=True)  # type: ignore[attr-defined]
    build.__name__ = f"build_{cls.__name__}"
    return build


async def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


ClientIp = Annotated[str | None, Depends(client_ip)]


def found(thing: T | None, detail: str) -> T:
    """``thing``, or a 404 with ``detail`` when there is none (or the caller may not see it)."""
    if thing is None:
        raise HTTPException(404, detail)
    return thing


@dataclass(frozen=True)
class RequestAudit:
    """The audit log bound to one request: who acts (``actor``: anonymous until known) and from where (``ip``).

    ``record`` writes a row in a transaction of its own (after the fact, or a refusal though the request rolls
    back); ``add`` puts it in the request's transaction (a command's ``requested`` row, with its ``command_id``,
    commits with the outbox entry)."""

    log: AuditLog
    actor: Actor
    ip: str | None
    route: str  # "<METHOD> <path>": what a refusal of the route is recorded against

    def by(self, actor: Actor) -> RequestAudit:
        return replace(self, actor=actor)

    async def record(
        self,
        action: str,
        outcome: Outcome,
        *,
        target_type: str | None = None,
        target_id: str | uuid.UUID | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
        actor: Actor | None = None,
    ) -> None:
        await self.log.record(
            action,
            outcome,
            actor or self.actor,
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            ip=self.ip,
            details=details,
            command_id=command_id,
        )

    def add(
        self,
        session: AsyncSession,
        action: str,
        outcome: Outcome,
        *,
        target_type: str | None = None,
        target_id: str | uuid.UUID | None = None,
        details: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> AuditEntry:
        return self.log.add(
            session,
            action,
            outcome,
            self.actor,
            target_type=target_type,
            target_id=target_id,
            ip=self.ip,
            details=details,
            command_id=command_id,
        )

    def row(
        self,
        action: str,
        outcome: Outcome,
        *,
        target_type: str | None = None,
        target_id: str | uuid.UUID | None = None,
        details: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """The entry's column values, for a statement that writes it with others (``bots.lifecycle.act``)."""
        return self.log.row(
            action,
            outcome,
            self.actor,
            target_type=target_type,
            target_id=target_id,
            ip=self.ip,
            details=details,
            command_id=command_id,
        )

    async def deny(self, code: int, detail: str, reason: str, actor: Actor | None = None) -> HTTPException:
        """Audit a refusal of the route and build the error to raise."""
        await self.record(
            "authz.denied", Outcome.denied, target_type="route", target_id=self.route[:64], reason=reason, actor=actor
        )
        headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
        return HTTPException(code, detail, headers=headers)

    @asynccontextmanager
    async def refusals(
        self,
        session: AsyncSession,
        action: str,
        refused: tuple[type[Refused], ...],
        *,
        target_type: str,
        target_id: str | uuid.UUID | None,
        details: dict[str, Any] | None = None,
    ) -> AsyncIterator[None]:
        """Around an action: a refusal of these kinds rolls the request's transaction back, is audited as the
        action's failure (its reason) and answered with its status and message."""
        try:
            yield
        except refused as exc:
            await session.rollback()
            await self.record(
                action, Outcome.failure, target_type=target_type, target_id=target_id, reason=str(exc), details=details
            )
            raise HTTPException(exc.status, str(exc)) from None


async def _request_audit(request: Request) -> RequestAudit:
    # app.state's audit log read here (not a dependency of its own): every request that can be refused runs this.
    ip = request.client.host if request.client else None
    return RequestAudit(request.app.state.audit, Actor.anonymous(), ip, f"{request.method} {request.url.path}")


# The request's audit before the caller is known (pass ``actor=``); routes of a signed-in caller take
# ``auth.deps.Audit``, bound to them.
AnonymousAudit = Annotated[RequestAudit, Depends(_request_audit)]
