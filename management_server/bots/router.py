"""/api/v1/bots: create, list, read, change and delete bots. Users see only their own; admins see all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError

from management_server import pagination
from management_server.audit.models import Outcome
from management_server.auth.deps import AdminPrincipal, Audit, Reader, Trader
from management_server.botdb import migrate
from management_server.botdb import service as botdb
from management_server.bots import listing, logs, service
from management_server.bots.deps import LockedBot, VisibleBot
from management_server.bots.lifecycle import Action, ActionRefused, act
from management_server.bots.schemas import (
    BotActionOut,
    BotCreate,
    BotLogOut,
    BotOut,
    BotUpdate,
    ForceExitIn,
    LiveStatusOut,
    TradeDbMigrationOut,
    TradeOut,
)
from management_server.db import SessionDep
from management_server.deps import (
    BotDatabasesDep,
    GatewayClientDep,
    MarketsDep,
    MasterKeysDep,
    ModelRegistryDep,
    RelayDep,
    SettingsDep,
    built,
)
from management_server.errors import errors
from management_server.freqai.deploy import start_bundle
from management_server.freqai.service import ModelRefused
from shared.http import json_with_etag

router = APIRouter(prefix="/api/v1/bots", tags=["bots"], responses=errors(400, 401, 403, 404, 409, 429))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BotOut)
async def create_bot(
    body: BotCreate,
    session: SessionDep,
    principal: Trader,
    markets: MarketsDep,
    keys: MasterKeysDep,
    databases: BotDatabasesDep,
    audit: Audit,
) -> BotOut:
    """Create a bot (stopped). It trades on the exchange simulator unless `exchange` names a real one. With
    FREQFLEET_BOT_DB=postgres its trades get a PostgreSQL database of their own (`trade_db`)."""
    try:
        known = await markets.pairs(body.exchange)
        bot = await service.create_committed(session, principal.viewer, body, known, keys, databases)
    except (service.BotRefused, botdb.BotDatabaseRefused) as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except IntegrityError:
        raise HTTPException(409, f"You have a bot named {body.name!r} already: choose another name.") from None
    await audit.record(
        "bot.create",
        Outcome.success,
        target_type="bot",
        target_id=bot.id,
        details={"name": bot.name, "dry_run": bot.dry_run, "exchange": bot.exchange, "trade_db": bot.trade_db},
    )
    return BotOut.model_validate(bot)


@router.get(
    "",
    response_model=list[BotOut],
    responses={304: {"description": "Unchanged since the ETag sent"}, 422: {"description": "A bad cursor"}},
)
async def list_bots(
    session: SessionDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=1000, description="Bots per page.")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    cursor: Annotated[
        str | None, Query(max_length=200, description="Where the page starts: a page's `X-Next-Cursor`.")
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Your bots (an admin sees everyone's), oldest first, `limit` at a time. A full page has an `X-Next-Cursor`
    header: pass it as `cursor` for the next page (no bot skipped or repeated when bots come and go meanwhile).
    The answer has an `ETag`: send it back as `If-None-Match` and an unchanged page is a 304 with no body."""
    try:
        after = None if cursor is None else pagination.decode(cursor)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if after is not None and offset:
        raise HTTPException(422, "Use cursor or offset, not both: the cursor already says where the page starts.")
    page = await listing.page(session, principal.viewer, limit, offset, after)
    answer = json_with_etag(page.body, if_none_match)
    if page.count == limit and page.last is not None:
        answer.headers["X-Next-Cursor"] = pagination.encode(*page.last)
    return answer


@router.get("/{bot_id}", response_model=BotOut)
async def get_bot(bot: VisibleBot) -> BotOut:
    return BotOut.model_validate(bot)


@router.patch("/{bot_id}", response_model=BotOut)
async def update_bot(
    body: BotUpdate,
    principal: Trader,
    bot: LockedBot,
    session: SessionDep,
    markets: MarketsDep,
    keys: MasterKeysDep,
    relay: RelayDep,
    audit: Audit,
) -> BotOut:
    try:
        change = await service.change(session, principal.viewer, bot, body, markets, keys)
        audit.add(  # with the command (a live change waits for the gateway's answer)
            session,
            "bot.update",
            Outcome.requested if change.live else Outcome.success,
            target_type="bot",
            target_id=bot.id,
            details=change.details(bot),
            command_id=None if change.live is None else change.live.command.event_id,
        )
        await session.commit()
    except (service.BotRefused, ActionRefused) as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except IntegrityError:
        raise HTTPException(409, "You have a bot with that name already: choose another name.") from None
    if change.live is not None:
        relay.wake()
    return BotOut.model_validate(bot)


@router.delete("/{bot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_bot(bot: LockedBot, session: SessionDep, databases: BotDatabasesDep, audit: Audit) -> Response:
    """Delete a stopped bot. A trade database of its own in PostgreSQL is backed up (`pg_dump`, into the management
    server's backups folder), then dropped with its role."""
    if not service.is_stopped(bot):
        raise HTTPException(409, "Stop the bot before deleting it.")
    bot_id = bot.id
    try:
        backup = await service.delete_committed(session, bot, databases)
    except botdb.BotDatabaseRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    details = None if backup is None else {"trade_db_backup": backup.name}
    await audit.record("bot.delete", Outcome.success, target_type="bot", target_id=bot_id, details=details)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{bot_id}/migrate-db", response_model=TradeDbMigrationOut, status_code=202, responses=errors(503))
async def migrate_trade_db(
    principal: AdminPrincipal,  # first: a non-admin learns nothing of the bot
    bot: LockedBot,
    session: SessionDep,
    keys: MasterKeysDep,
    databases: BotDatabasesDep,
    relay: RelayDep,
    audit: Audit,
) -> Response:
    """Admin: move a stopped SQLite bot's trades into a PostgreSQL database of its own (FREQFLEET_BOT_DB=postgres),
    copied and checked row by row on its gateway; `trade_db` says `migrating` until the gateway answers, then
    `postgres` (or `sqlite` again, with the reason in `last_error`). The audit log's accepted row has the rows
    copied per table."""
    try:
        moved = await migrate.migrate(session, bot, keys, databases, audit)
        await session.commit()
    except (botdb.BotDatabaseRefused, ActionRefused) as exc:
        raise HTTPException(exc.status, str(exc)) from None
    relay.wake()
    fields = {name: getattr(moved.bot, name) for name in listing.COLUMNS}
    command_id = None if moved.command is None else moved.command.event_id
    out = TradeDbMigrationOut.model_validate(fields | {"command_id": command_id, "notice": moved.notice})
    return Response(out.model_dump_json(), status_code=202, media_type="application/json")


@dataclass(frozen=True)
class BotControl:
    """Control actions on the bot of the path, its row locked. The command is committed with the audit's
    ``requested`` row, so the gateway's answer (accepted, or refused and why) always finds it; a refusal is
    audited as the action's failure."""

    bot: LockedBot
    session: SessionDep
    keys: MasterKeysDep
    registry: ModelRegistryDep
    relay: RelayDep
    audit: Audit

    async def __call__(self, action: Action, trade_id: int | str | None = None) -> Response:
        bot, session, audited = self.bot, self.session, f"bot.{action.value}"
        refused = (ActionRefused, ModelRefused)
        async with self.audit.refusals(session, audited, refused, target_type="bot", target_id=bot.id):
            # A FreqAI bot's start carries its model (management_server/freqai).
            bundle = await start_bundle(session, self.registry, bot) if action is Action.start else None
            result = await act(session, bot, action, self.keys, trade_id, bundle, audit=self.audit)
            await session.commit()
        self.relay.wake()
        # Validated and written once (as the route's response_model says), not again by FastAPI.
        fields = {name: getattr(result.bot, name) for name in listing.COLUMNS}
        out = BotActionOut.model_validate(fields | {"command_id": result.command.event_id, "notice": result.notice})
        return Response(out.model_dump_json(), media_type="application/json")


Control = Annotated[BotControl, Depends(built(BotControl))]


@router.post("/{bot_id}/start", response_model=BotActionOut, responses=errors(503))
async def start_bot(control: Control) -> Response:
    """Start the bot on a gateway (its strategy must be approved)."""
    return await control(Action.start)


@router.post("/{bot_id}/stop", response_model=BotActionOut)
async def stop_bot(control: Control) -> Response:
    """Stop the bot; its open trades stay open in its database."""
    return await control(Action.stop)


@router.post("/{bot_id}/restart", response_model=BotActionOut)
async def restart_bot(control: Control) -> Response:
    return await control(Action.restart)


@router.post("/{bot_id}/pause", response_model=BotActionOut)
async def pause_bot(control: Control) -> Response:
    """No new entries; open trades are still managed (Freqtrade's stopentry)."""
    return await control(Action.pause)


@router.post("/{bot_id}/resume", response_model=BotActionOut)
async def resume_bot(control: Control) -> Response:
    return await control(Action.resume)


@router.post("/{bot_id}/forceexit", response_model=BotActionOut)
async def forceexit_bot(body: ForceExitIn, control: Control) -> Response:
    """Close one open trade, or all of them, at market."""
    return await control(Action.forceexit, body.trade_id)


@router.get("/{bot_id}/trades", response_model=list[TradeOut])
async def bot_trades(
    bot: VisibleBot,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[TradeOut]:
    """The bot's trades as its gateway reported them, newest first."""
    return [TradeOut.model_validate(t) for t in await service.trades(session, bot.id, limit, offset)]


@router.get("/{bot_id}/status", response_model=LiveStatusOut)
async def bot_status(bot: VisibleBot, settings: SettingsDep) -> LiveStatusOut:
    """The latest live status the gateway reported (every few seconds), with its age. While no process of the
    bot runs (stopped, halted, failed, starting), `state` is null and `open_trades` empty; `profit` and the
    time are those of the last report. A report older than `FREQFLEET_RECONCILE_STALE_AFTER` seconds says
    nothing of now: `state` is then `unknown` and `open_trades` empty."""
    return service.status_report(bot, settings.reconcile_stale_after)


@router.get(
    "/{bot_id}/logs",
    response_model=BotLogOut,
    responses=errors(409, 503) | {200: {"content": {"text/event-stream": {}}}},
)
async def bot_logs(
    request: Request,  # a followed stream ends when its client goes (request.is_disconnected)
    bot: VisibleBot,
    session: SessionDep,
    client: GatewayClientDep,
    lines: Annotated[int, Query(ge=1, le=1000, description="How many of the latest lines.")] = 100,
    follow: Annotated[bool, Query(description="Then every new line, as Server-Sent Events (event: line).")] = False,
) -> BotLogOut | StreamingResponse:
    """The bot's last log lines, read on its gateway (its secrets taken out), oldest first; with `follow=true`
    a stream of them and of every new one as it comes (`event: line`, `data: {"line": ...}`), until you close it."""
    bot_id = bot.id
    try:
        gateway_id, api_url = await logs.where(session, bot)
        await session.close()  # no connection held while the gateway answers (or for a whole stream)
        if follow:
            stream = logs.follow(client, gateway_id, api_url, bot_id, lines, request.is_disconnected)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
        return BotLogOut.model_validate(await logs.read(client, gateway_id, api_url, bot_id, lines))
    except logs.LogUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from None
