"""management_server/deps.py: each service dependency gives what the lifespan put on ``app.state``, of the class its
alias declares; the request's audit writes the rows routes used to write by hand, refusals included."""

from __future__ import annotations

import inspect
import types
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import pytest_asyncio
from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from management_server import deps
from management_server.audit.models import AuditEntry, Outcome
from management_server.audit.service import Actor, AuditLog
from management_server.config import ManagementSettings
from management_server.db import create_engine, create_sessionmaker
from management_server.deps import RequestAudit
from management_server.errors import Refused
from tests.management_server.conftest import Management

ALICE = Actor(uuid.UUID(int=7), "alice@example.com")


def _is(value: object, declared: Any) -> bool:
    if get_origin(declared) in (Union, types.UnionType):
        return any(_is(value, arg) for arg in get_args(declared))
    if declared is type(None):
        return value is None
    return isinstance(value, get_origin(declared) or declared)


async def test_every_service_dependency_gives_its_declared_class(management: Management) -> None:
    request = Request({"type": "http", "app": management.app, "method": "GET", "path": "/", "headers": []})
    checked = []
    for name, alias in vars(deps).items():
        if get_origin(alias) is not Annotated:
            continue
        declared, marker = get_args(alias)
        call = marker.dependency
        if list(inspect.signature(call).parameters) != ["request"]:
            continue  # built on other dependencies (the audit)
        value = call(request)
        value = await value if inspect.isawaitable(value) else value
        assert _is(value, declared), f"{name} gave a {type(value).__name__}, not {declared}"
        checked.append(name)
    assert {
        "SettingsDep",
        "SessionmakerDep",
        "RedisDep",
        "MasterKeysDep",
        "TokenKeysDep",
        "CommandKeysDep",
        "RelayDep",
        "GatewayClientDep",
        "MarketsDep",
        "ModelRegistryDep",
        "CheckQueueDep",
        "TrainQueueDep",
        "ClientIp",
    } <= set(checked)


@pytest_asyncio.fixture(loop_scope="session")
async def audit_log(management_settings: ManagementSettings) -> AsyncIterator[AuditLog]:
    engine = create_engine(management_settings)
    try:
        yield AuditLog(create_sessionmaker(engine))
    finally:
        await engine.dispose()


async def _rows(log: AuditLog) -> list[AuditEntry]:
    async with log.sessionmaker() as session:
        return list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())


async def test_record_and_add_write_the_callers_actor_and_ip(audit_log: AuditLog) -> None:
    audit = RequestAudit(audit_log, ALICE, "10.1.2.3", "POST /api/v1/things")
    target, command = uuid.uuid4(), uuid.uuid4()
    await audit.record("thing.make", Outcome.success, target_type="thing", target_id=target, details={"n": 1})
    async with audit_log.sessionmaker.begin() as session:
        audit.add(session, "thing.send", Outcome.requested, target_type="thing", target_id=target, command_id=command)
    await audit.record("thing.login", Outcome.denied, reason="no", actor=Actor(None, "bob@example.com"))

    made, sent, login = await _rows(audit_log)
    assert (made.action, made.outcome, made.actor_id, made.actor, made.ip, made.via) == (
        "thing.make",
        "success",
        ALICE.id,
        ALICE.label,
        "10.1.2.3",
        "rest",
    )
    assert (made.target_type, made.target_id, made.details) == ("thing", str(target), {"n": 1})
    assert (sent.outcome, sent.command_id, sent.actor, sent.ip) == ("requested", command, ALICE.label, "10.1.2.3")
    assert (login.actor_id, login.actor, login.reason, login.ip) == (None, "bob@example.com", "no", "10.1.2.3")
    assert audit.by(Actor.anonymous()).actor == Actor.anonymous()


async def test_deny_audits_the_route_and_asks_for_a_bearer_only_when_unauthenticated(audit_log: AuditLog) -> None:
    audit = RequestAudit(audit_log, Actor.anonymous(), None, "DELETE /api/v1/bots/" + "x" * 80)
    unauthenticated = await audit.deny(401, "Log in.", "no bearer token")
    forbidden = await audit.deny(403, "Not yours.", "admin route", ALICE)

    assert (unauthenticated.status_code, unauthenticated.detail) == (401, "Log in.")
    assert unauthenticated.headers == {"WWW-Authenticate": "Bearer"}
    assert (forbidden.status_code, forbidden.headers) == (403, None)
    first, second = await _rows(audit_log)
    assert (first.action, first.outcome, first.actor, first.target_type) == (
        "authz.denied",
        "denied",
        "anonymous",
        "route",
    )
    assert first.target_id == audit.route[:64]
    assert (second.actor_id, second.reason) == (ALICE.id, "admin route")


class ThingRefused(Refused):
    pass


async def _start_a_busy_thing(audit: RequestAudit, session: AsyncSession, target: uuid.UUID) -> None:
    refused = (ThingRefused,)
    details = {"k": "v"}
    async with audit.refusals(session, "thing.start", refused, target_type="thing", target_id=target, details=details):
        audit.add(session, "thing.start", Outcome.requested, target_type="thing", target_id=target)
        raise ThingRefused(409, "The thing is busy.")


async def test_a_refusal_rolls_back_is_audited_as_a_failure_and_answered(audit_log: AuditLog) -> None:
    audit = RequestAudit(audit_log, ALICE, "10.1.2.3", "POST /api/v1/things/1/start")
    target = uuid.uuid4()
    async with audit_log.sessionmaker() as session:
        with pytest.raises(HTTPException) as raised:
            await _start_a_busy_thing(audit, session, target)
        assert (raised.value.status_code, raised.value.detail) == (409, "The thing is busy.")
        await session.commit()  # the requested row was rolled back: nothing to commit

    (failure,) = await _rows(audit_log)
    assert (failure.action, failure.outcome, failure.reason, failure.details) == (
        "thing.start",
        "failure",
        "The thing is busy.",
        {"k": "v"},
    )
    assert (failure.actor, failure.ip, failure.target_id) == (ALICE.label, "10.1.2.3", str(target))


async def _refuse_otherwise(audit: RequestAudit, session: AsyncSession) -> None:
    async with audit.refusals(session, "thing.start", (ThingRefused,), target_type="thing", target_id=None):
        raise Refused(400, "Another kind.")


async def test_other_errors_pass_through_unaudited(audit_log: AuditLog) -> None:
    audit = RequestAudit(audit_log, ALICE, None, "POST /api/v1/things")
    async with audit_log.sessionmaker() as session:
        with pytest.raises(Refused, match="Another kind"):
            await _refuse_otherwise(audit, session)
    assert await _rows(audit_log) == []
