"""/api/v1/gateways (admins): enroll a gateway, list them, revoke one, drain one."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status

from management_server.audit.models import Outcome
from management_server.auth.deps import AdminPrincipal, Audit
from management_server.db import SessionDep
from management_server.deps import EventSignaturesDep
from management_server.errors import errors
from management_server.gateways import service
from management_server.gateways.models import Gateway
from management_server.gateways.schemas import GatewayEnroll, GatewayOut, GatewayRevoked

router = APIRouter(prefix="/api/v1/gateways", tags=["gateways"], responses=errors(400, 401, 403, 404, 409, 429))


def gateway_out(gateway: Gateway, now: datetime | None = None) -> GatewayOut:
    now = now or datetime.now(UTC)
    live = gateway.enrolled and gateway.last_seen_at is not None and gateway.last_seen_at >= now - service.LIVE_WINDOW
    return GatewayOut(
        gateway_id=gateway.gateway_id,
        status=gateway.status,
        live=live,
        signing_key=gateway.signing_key,
        sealing_key=gateway.sealing_key,
        enrolled_at=gateway.enrolled_at,
        revoked_at=gateway.revoked_at,
        host=gateway.host,
        version=gateway.version,
        api_url=gateway.api_url,
        last_seen_at=gateway.last_seen_at,
        bots_running=gateway.bots_running,
        capacity=gateway.capacity,
        load=gateway.load,
        draining=gateway.drain_requested_at is not None,
        drain_requested_at=gateway.drain_requested_at,
    )


@router.get("", response_model=list[GatewayOut])
async def list_gateways(session: SessionDep, principal: AdminPrincipal) -> list[GatewayOut]:
    """Every gateway: enrolled, revoked, or heard of but never enrolled (its reports are ignored)."""
    now = datetime.now(UTC)
    return [gateway_out(g, now) for g in await service.list_gateways(session)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=GatewayOut)
async def enroll_gateway(
    body: GatewayEnroll, session: SessionDep, principal: AdminPrincipal, signatures: EventSignaturesDep, audit: Audit
) -> GatewayOut:
    """Enroll a gateway from the line `freqfleet gateways identity` prints on its host (its public keys). From
    then on its signed reports are applied, and live bots' credentials can be sealed to it."""
    try:
        gateway, changed = await service.enroll(session, body.enrollment, principal.user.id)
    except service.EnrollmentRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await session.commit()
    signatures.forget()
    if changed:
        await audit.record(
            "gateway.enroll",
            Outcome.success,
            target_type="gateway",
            target_id=gateway.gateway_id,
            details={"signing_key": gateway.signing_key},
        )
    return gateway_out(gateway)


@router.delete("/{gateway_id}", response_model=GatewayRevoked)
async def revoke_gateway(
    gateway_id: str, session: SessionDep, principal: AdminPrincipal, signatures: EventSignaturesDep, audit: Audit
) -> GatewayRevoked:
    """Revoke a gateway: its reports are refused from now on, no token or credential goes to it, and its bots
    are shown as orphaned until they are started again (on an enrolled gateway)."""
    try:
        gateway, orphaned = await service.revoke(session, gateway_id)
    except service.EnrollmentRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await session.commit()
    signatures.forget()  # its reports are refused from the next batch on
    await audit.record(
        "gateway.revoke",
        Outcome.success,
        target_type="gateway",
        target_id=gateway_id,
        details={"bots_orphaned": orphaned},
    )
    return GatewayRevoked(gateway=gateway_out(gateway), bots_orphaned=orphaned)


@router.post("/{gateway_id}/drain", response_model=GatewayOut)
async def drain_gateway(gateway_id: str, session: SessionDep, principal: AdminPrincipal, audit: Audit) -> GatewayOut:
    """Drain a gateway for maintenance: it takes no new bot, and each of its bots is stopped and started on another
    gateway with its trades (PostgreSQL), one at a time, never running in two places; until `DELETE .../drain`."""
    return await _set_draining(gateway_id, True, session, audit)


@router.delete("/{gateway_id}/drain", response_model=GatewayOut)
async def undrain_gateway(gateway_id: str, session: SessionDep, principal: AdminPrincipal, audit: Audit) -> GatewayOut:
    """End a gateway's drain: it takes bots again (those moved off stay where they are)."""
    return await _set_draining(gateway_id, False, session, audit)


async def _set_draining(gateway_id: str, draining: bool, session: SessionDep, audit: Audit) -> GatewayOut:
    try:
        gateway = await service.set_draining(session, gateway_id, draining)
    except service.EnrollmentRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await session.commit()
    action = "gateway.drain" if draining else "gateway.undrain"
    await audit.record(action, Outcome.success, target_type="gateway", target_id=gateway_id)
    return gateway_out(gateway)
