"""/api/v1/bots: create, list, read, change and delete bots. Users see only their own; admins see all."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from management_server.audit.models import Outcome
from management_server.auth.deps import Principal, Reader, Trader, client_ip
from management_server.bots import logs, service
from management_server.bots.lifecycle import Action, ActionRefused, act, update_live
from management_server.bots.models import Bot, Trade
from management_server.bots.schemas import (
    BotActionOut,
    BotCreate,
    BotLogOut,
    BotOut,
    BotUpdate,
    ForceExitIn,
    LiveStatusOut,
    TradeOut,
)
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.freqai.deploy import start_bundle
from management_server.freqai.service import ModelRefused

router = APIRouter(prefix="/api/v1/bots", tags=["bots"], responses=errors(400, 401, 403, 404, 409, 429))

NOT_FOUND = "No such bot."


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BotOut)
async def create_bot(body: BotCreate, request: Request, session: SessionDep, principal: Trader) -> BotOut:
    """Create a bot (stopped). It trades on the exchange simulator unless `exchange` names a real one."""
    try:
        known = await request.app.state.markets.pairs(body.exchange)
        bot = await service.create(session, principal.viewer, body, known)
        await session.commit()
    except service.BotRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except IntegrityError:
        raise HTTPException(409, f"You have a bot named {body.name!r} already: choose another name.") from None
    await request.app.state.audit.record(
        "bot.create",
        Outcome.success,
        principal.actor,
        target_type="bot",
        target_id=bot.id,
        ip=client_ip(request),
        details={"name": bot.name, "dry_run": bot.dry_run, "exchange": bot.exchange},
    )
    return BotOut.model_validate(bot)


@router.get("", response_model=list[BotOut])
async def list_bots(
    session: SessionDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[BotOut]:
    """Your bots (an admin sees everyone's)."""
    query = select(Bot).order_by(Bot.created_at, Bot.id).limit(limit).offset(offset)
    if not principal.is_admin:
        query = query.where(Bot.owner_id == principal.user.id)
    return [BotOut.model_validate(b) for b in (await session.execute(query)).scalars()]


@router.get("/{bot_id}", response_model=BotOut)
async def get_bot(bot_id: uuid.UUID, session: SessionDep, principal: Reader) -> BotOut:
    bot = await service.visible(session, principal.viewer, bot_id)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    return BotOut.model_validate(bot)


@router.patch("/{bot_id}", response_model=BotOut)
async def update_bot(
    bot_id: uuid.UUID, body: BotUpdate, request: Request, session: SessionDep, principal: Trader
) -> BotOut:
    bot = await service.visible(session, principal.viewer, bot_id, lock=True)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    try:
        before = service.live_values(bot)
        known = await request.app.state.markets.pairs(bot.exchange) if body.pairs is not None else None
        changes = service.update(bot, body, known)
        live = (
            await update_live(session, bot, request.app.state.master_keys)
            if set(changes) - service.MANAGEMENT_FIELDS
            else None
        )
        if live is not None:  # put back if the gateway refuses it: the database says what runs
            service.note_live_change(bot, live.command.event_id, before)
        request.app.state.audit.add(  # with the command (a live change waits for the gateway's answer)
            session,
            "bot.update",
            Outcome.requested if live else Outcome.success,
            principal.actor,
            target_type="bot",
            target_id=bot.id,
            ip=client_ip(request),
            details=changes | ({"live": True, "generation": bot.generation} if live else {}),
            command_id=None if live is None else live.command.event_id,
        )
        await session.commit()
    except (service.BotRefused, ActionRefused) as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except IntegrityError:
        raise HTTPException(409, "You have a bot with that name already: choose another name.") from None
    if live is not None:
        request.app.state.outbox_relay.wake()
    return BotOut.model_validate(bot)


@router.delete("/{bot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_bot(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> Response:
    bot = await service.visible(session, principal.viewer, bot_id, lock=True)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    if not service.is_stopped(bot):
        raise HTTPException(409, "Stop the bot before deleting it.")
    await session.delete(bot)
    await session.commit()
    await request.app.state.audit.record(
        "bot.delete", Outcome.success, principal.actor, target_type="bot", target_id=bot_id, ip=client_ip(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _act(
    bot_id: uuid.UUID,
    action: Action,
    request: Request,
    session: SessionDep,
    principal: Principal,
    trade_id: int | str | None = None,
) -> BotActionOut:
    bot = await service.visible(session, principal.viewer, bot_id, lock=True)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    audit = request.app.state.audit
    try:
        # A FreqAI bot's start carries its model (management_server/freqai).
        bundle = await start_bundle(session, request.app.state.model_registry, bot) if action is Action.start else None
        result = await act(session, bot, action, request.app.state.master_keys, trade_id, bundle)
        audit.add(  # with the command, so the gateway's answer (accepted, or refused and why) always finds it
            session,
            f"bot.{action.value}",
            Outcome.requested,
            principal.actor,
            target_type="bot",
            target_id=bot_id,
            ip=client_ip(request),
            details={"generation": result.bot.generation, "gateway_id": result.gateway_id, "trade_id": trade_id},
            command_id=result.command.event_id,
        )
        await session.commit()
    except (ActionRefused, ModelRefused) as exc:
        await session.rollback()
        await audit.record(
            f"bot.{action.value}",
            Outcome.failure,
            principal.actor,
            target_type="bot",
            target_id=bot_id,
            reason=str(exc),
            ip=client_ip(request),
        )
        raise HTTPException(exc.status, str(exc)) from None
    request.app.state.outbox_relay.wake()
    out = BotActionOut.model_validate(
        {
            **BotOut.model_validate(result.bot).model_dump(),
            "command_id": result.command.event_id,
            "notice": result.notice,
        }
    )
    return out


@router.post("/{bot_id}/start", response_model=BotActionOut, responses=errors(503))
async def start_bot(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> BotActionOut:
    """Start the bot on a gateway (its strategy must be approved)."""
    return await _act(bot_id, Action.start, request, session, principal)


@router.post("/{bot_id}/stop", response_model=BotActionOut)
async def stop_bot(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> BotActionOut:
    """Stop the bot; its open trades stay open in its database."""
    return await _act(bot_id, Action.stop, request, session, principal)


@router.post("/{bot_id}/restart", response_model=BotActionOut)
async def restart_bot(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> BotActionOut:
    return await _act(bot_id, Action.restart, request, session, principal)


@router.post("/{bot_id}/pause", response_model=BotActionOut)
async def pause_bot(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> BotActionOut:
    """No new entries; open trades are still managed (Freqtrade's stopentry)."""
    return await _act(bot_id, Action.pause, request, session, principal)


@router.post("/{bot_id}/resume", response_model=BotActionOut)
async def resume_bot(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> BotActionOut:
    return await _act(bot_id, Action.resume, request, session, principal)


@router.post("/{bot_id}/forceexit", response_model=BotActionOut)
async def forceexit_bot(
    bot_id: uuid.UUID, body: ForceExitIn, request: Request, session: SessionDep, principal: Trader
) -> BotActionOut:
    """Close one open trade, or all of them, at market."""
    return await _act(bot_id, Action.forceexit, request, session, principal, body.trade_id)


@router.get("/{bot_id}/trades", response_model=list[TradeOut])
async def bot_trades(
    bot_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[TradeOut]:
    """The bot's trades as its gateway reported them, newest first."""
    if await service.visible(session, principal.viewer, bot_id) is None:
        raise HTTPException(404, NOT_FOUND)
    rows = await session.execute(
        select(Trade).where(Trade.bot_id == bot_id).order_by(Trade.open_date.desc()).limit(limit).offset(offset)
    )
    return [TradeOut.model_validate(t) for t in rows.scalars()]


@router.get("/{bot_id}/status", response_model=LiveStatusOut)
async def bot_status(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Reader) -> LiveStatusOut:
    """The latest live status the gateway reported (every few seconds), with its age. While no process of the
    bot runs (stopped, halted, failed, starting), `state` is null and `open_trades` empty; `profit` and the
    time are those of the last report. A report older than `FREQFLEET_RECONCILE_STALE_AFTER` seconds says
    nothing of now: `state` is then `unknown` and `open_trades` empty."""
    bot = await service.visible(session, principal.viewer, bot_id)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    live = service.live_status(bot) or {}
    age = (datetime.now(UTC) - bot.last_status_at).total_seconds() if bot.last_status_at else None
    if live and age is not None and age > request.app.state.settings.reconcile_stale_after:
        live = {"state": "unknown"}
    return LiveStatusOut(
        state=live.get("state"),
        actual_state=bot.actual_state,
        open_trades=live.get("open_trades", []),
        profit=(bot.last_status or {}).get("profit", {}),
        updated_at=bot.last_status_at,
        age_seconds=age,
    )


@router.get(
    "/{bot_id}/logs",
    response_model=BotLogOut,
    responses=errors(409, 503) | {200: {"content": {"text/event-stream": {}}}},
)
async def bot_logs(
    bot_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: Reader,
    lines: Annotated[int, Query(ge=1, le=1000, description="How many of the latest lines.")] = 100,
    follow: Annotated[bool, Query(description="Then every new line, as Server-Sent Events (event: line).")] = False,
) -> BotLogOut | StreamingResponse:
    """The bot's last log lines, read on its gateway (its secrets taken out), oldest first; with `follow=true`
    a stream of them and of every new one as it comes (`event: line`, `data: {"line": ...}`), until you close it."""
    bot = await service.visible(session, principal.viewer, bot_id)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    client = request.app.state.gateway_client
    try:
        gateway_id, api_url = await logs.where(session, bot)
        await session.close()  # no connection held while the gateway answers (or for a whole stream)
        if follow:
            stream = logs.follow(client, gateway_id, api_url, bot_id, lines, request.is_disconnected)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
        return BotLogOut.model_validate(await logs.read(client, gateway_id, api_url, bot_id, lines))
    except logs.LogUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from None
