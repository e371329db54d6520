"""/api/v1/bots: create, list, read, change and delete bots. Users see only their own; admins see all."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from management_server.audit.models import Outcome
from management_server.auth.deps import Reader, Trader, client_ip
from management_server.bots import service
from management_server.bots.models import Bot
from management_server.bots.schemas import BotCreate, BotOut, BotUpdate
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.users.models import Role

router = APIRouter(prefix="/api/v1/bots", tags=["bots"], responses=errors(400, 401, 403, 404, 409, 429))

NOT_FOUND = "No such bot."


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BotOut)
async def create_bot(body: BotCreate, request: Request, session: SessionDep, principal: Trader) -> BotOut:
    """Create a bot (stopped). It trades on the exchange simulator unless `exchange` names a real one."""
    try:
        bot = await service.create(session, principal.user, body)
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
    if principal.user.role is not Role.admin:
        query = query.where(Bot.owner_id == principal.user.id)
    return [BotOut.model_validate(b) for b in (await session.execute(query)).scalars()]


@router.get("/{bot_id}", response_model=BotOut)
async def get_bot(bot_id: uuid.UUID, session: SessionDep, principal: Reader) -> BotOut:
    bot = await service.visible(session, principal.user, bot_id)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    return BotOut.model_validate(bot)


@router.patch("/{bot_id}", response_model=BotOut)
async def update_bot(
    bot_id: uuid.UUID, body: BotUpdate, request: Request, session: SessionDep, principal: Trader
) -> BotOut:
    bot = await service.visible(session, principal.user, bot_id)
    if bot is None:
        raise HTTPException(404, NOT_FOUND)
    try:
        changes = service.update(bot, body)
        await session.commit()
    except service.BotRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except IntegrityError:
        raise HTTPException(409, "You have a bot with that name already: choose another name.") from None
    await request.app.state.audit.record(
        "bot.update",
        Outcome.success,
        principal.actor,
        target_type="bot",
        target_id=bot.id,
        ip=client_ip(request),
        details=changes,
    )
    return BotOut.model_validate(bot)


@router.delete("/{bot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_bot(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> Response:
    bot = await service.visible(session, principal.user, bot_id)
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
