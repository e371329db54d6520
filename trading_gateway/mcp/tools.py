"""The MCP tools: what an AI agent can read and do, each scoped and annotated.

Every tool has a JSON Schema of its arguments (from a pydantic model, unknown keys refused), the
scope its token must carry (``read`` to look, ``trade`` to act) and MCP annotations
(``readOnlyHint``, ``destructiveHint``, ``idempotentHint``, ``openWorldHint``) a client can use to
ask its user before calling. Where the data comes from:

- **ownership and desired state**: the management server, called with the caller's own token
  (:mod:`trading_gateway.mcp.management`). A user's agent sees and touches only that user's bots
  because the management server answers "No such bot." for anyone else's; an admin's sees all.
- **live reads** (open trades, performance, logs, the live part of ``get_bot``): this gateway's own
  bots, through their Freqtrade REST API, once the management server has confirmed the bot is the
  caller's. A bot that runs on another gateway (or not at all) is said to be so.
- **changes of desired state** (start, stop, pause, resume, force exit, model deploy and rollback):
  the management server's API, which checks, records the new desired state, audits and sends the
  command over the bus; the answer is the bot with its new desired state and the command's id.
- **emergency_stop** (needs ``confirm: true``): halts the targeted bots of this gateway at once (the
  gateway's own emergency stop: stop entries, exit every trade, stop, end the process) and, at the
  same time, tells the management server (``POST /api/v1/emergency-stop`` with the caller's token),
  so their desired state becomes halted there, bots on other gateways are halted too, and the stop is
  audited. A user's bots are resolved through the management server first: while it can't be reached,
  only an admin's emergency stop acts locally (an admin may halt any bot).

Results are JSON objects (``structuredContent``, and the same JSON as text). Failures are
:class:`~trading_gateway.mcp.errors.ToolProblem` messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import to_jsonable_python

from shared.auth.claims import Scope
from shared.bus.messages import PairName
from shared.logging import get_logger
from trading_gateway.bots.client import BotApiError, FreqtradeClient
from trading_gateway.fleet.bot import ManagedBot
from trading_gateway.fleet.logs import bot_log
from trading_gateway.fleet.service import Fleet
from trading_gateway.mcp import untrusted
from trading_gateway.mcp.audit import Target
from trading_gateway.mcp.auth import Caller
from trading_gateway.mcp.errors import ToolDenied, ToolFailure, ToolProblem
from trading_gateway.mcp.management import ManagementApi

log = get_logger(__name__)

Result = dict[str, Any]


@dataclass(frozen=True)
class ToolContext:
    caller: Caller
    fleet: Fleet
    api: ManagementApi

    @property
    def gateway_id(self) -> str:
        return self.fleet.settings.gateway_id


# ====================================================================== arguments


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


BotIdField = Annotated[uuid.UUID, Field(description="The bot's id (see list_bots).")]


class NoArgs(Args):
    pass


class BotArgs(Args):
    bot_id: BotIdField


class TradesArgs(Args):
    bot_id: BotIdField
    limit: int = Field(default=50, ge=1, le=500, description="How many trades, newest first.")
    offset: int = Field(default=0, ge=0, le=1_000_000, description="How many of the newest to skip (paging).")


class LogsArgs(Args):
    bot_id: BotIdField
    limit: int = Field(default=50, ge=1, le=500, description="How many of the latest log lines.")


class ForceExitArgs(Args):
    bot_id: BotIdField
    trade_id: Annotated[int, Field(ge=0, le=2**31)] | Literal["all"] = Field(
        description='A trade id of the bot (see get_open_trades), or "all" for every open trade.'
    )


class EmergencyArgs(Args):
    confirm: bool = Field(
        default=False,
        strict=True,
        description="Must be true: the emergency stop exits every open trade at market and stops the bots.",
    )
    bot_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=1000, description="Bots to halt.")
    scope: Literal["mine", "all"] | None = Field(
        default=None, description='"mine": all of your bots; "all": the whole fleet (admins only).'
    )
    reason: str | None = Field(default=None, max_length=500, description="Why, for the audit log.")

    @model_validator(mode="after")
    def _one_target(self) -> EmergencyArgs:
        if (self.bot_ids is None) == (self.scope is None):
            raise ValueError('give either "bot_ids" (a list of bot ids) or "scope" ("mine" or "all")')
        return self


class DeployModelArgs(Args):
    bot_id: BotIdField
    model_id: uuid.UUID = Field(description="The model version to deploy (see list_models).")


class PredictionsArgs(Args):
    bot_id: BotIdField
    pair: PairName | None = Field(default=None, description="Only this pair, e.g. BTC/USDT.")


# ====================================================================== shapes

BOT_FIELDS = (
    "id",
    "name",
    "owner_id",
    "strategy_id",
    "exchange",
    "pairs",
    "timeframe",
    "stake_currency",
    "stake_amount",
    "max_open_trades",
    "dry_run",
    "model_id",
    "desired_state",
    "actual_state",
    "generation",
    "gateway_id",
    "last_error",
)
OPEN_TRADE_FIELDS = (
    "trade_id",
    "pair",
    "is_short",
    "open_date",
    "open_rate",
    "current_rate",
    "amount",
    "stake_amount",
    "profit_abs",
    "profit_ratio",
    "profit_pct",
    "stop_loss_abs",
    "stop_loss_ratio",
    "enter_tag",
    "leverage",
)


def jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


def bot_summary(bot: dict[str, Any]) -> Result:
    return untrusted.fields(bot, BOT_FIELDS)


def _view(fleet: Fleet, bot_id: uuid.UUID) -> dict[str, Any] | None:
    for view in fleet.views():
        if view.bot_id == bot_id:
            fields = dataclasses.asdict(view)
            fields.pop("port", None)  # the bot's REST API is the gateway's business
            return {k: jsonable(v) for k, v in fields.items()}
    return None


def _where(bot: dict[str, Any], gateway_id: str) -> str:
    elsewhere = bot.get("gateway_id")
    if elsewhere and elsewhere != gateway_id:
        return f"it is placed on gateway {elsewhere}: connect to that gateway's MCP endpoint for its live data"
    return f"it is {bot.get('actual_state', 'not running')} (start it with start_bot)"


def _running_here(ctx: ToolContext, bot: dict[str, Any]) -> tuple[ManagedBot, FreqtradeClient]:
    bot_id = uuid.UUID(str(bot["id"]))
    managed = ctx.fleet.bot(bot_id)
    if managed is None:
        raise ToolFailure(
            f"Bot {bot_id} does not run on this gateway ({ctx.gateway_id}): {_where(bot, ctx.gateway_id)}."
        )
    process, api = managed.process, managed.api
    if process is None or api is None or not process.is_alive():
        raise ToolFailure(
            f"Bot {bot_id} is {managed.actual.value} on this gateway: it has no running process to read "
            "(start it with start_bot)."
        )
    return managed, api


def _bot_unanswered(bot_id: uuid.UUID) -> ToolFailure:
    return ToolFailure(f"Bot {bot_id}'s Freqtrade API did not answer; it may be busy or restarting: try again shortly.")


# ====================================================================== reads


async def list_bots(ctx: ToolContext, args: NoArgs) -> Result:
    bots = await ctx.api.bots(ctx.caller)
    local = {str(view.bot_id): view for view in ctx.fleet.views()}
    rows = []
    for bot in bots:
        row = bot_summary(bot)
        view = local.get(str(bot.get("id")))
        row["on_this_gateway"] = view is not None
        if view is not None:
            row["live"] = {
                "actual": view.actual,
                "freqtrade_state": view.freqtrade_state,
                "open_trades": view.open_trades,
                "last_status_age_seconds": view.last_status_age_seconds,
            }
        rows.append(row)
    return {"gateway_id": ctx.gateway_id, "count": len(rows), "bots": rows}


async def get_bot(ctx: ToolContext, args: BotArgs) -> Result:
    bot = await ctx.api.bot(ctx.caller, args.bot_id)
    return await bot_status(ctx, bot)


async def bot_status(ctx: ToolContext, bot: dict[str, Any]) -> Result:
    """Desired and actual state from the management server, live status from this gateway's bot when it runs
    here (else the last status its gateway reported)."""
    result = bot_summary(bot)
    bot_id = uuid.UUID(str(bot["id"]))
    view = _view(ctx.fleet, bot_id)
    result["on_this_gateway"] = view is not None
    managed = ctx.fleet.bot(bot_id)
    if view is not None and managed is not None:
        live: Result = {"source": f"this gateway ({ctx.gateway_id}), read now"} | view
        process, api = managed.process, managed.api
        if process is not None and api is not None and process.is_alive():
            try:
                open_trades, profit = await asyncio.gather(api.status(), api.profit())
            except BotApiError:
                live["error"] = "the bot's Freqtrade API did not answer just now"
            else:
                live["open_trades"] = [_open_trade(t) for t in open_trades]
                live["profit"] = _profit(profit)
        result["live"] = live
    else:
        reported = await ctx.api.request(ctx.caller, "GET", f"/bots/{bot_id}/status")
        result["live"] = {"source": "the management server (last status its gateway reported)"} | (
            reported if isinstance(reported, dict) else {}
        )
    return result


def _open_trade(trade: dict[str, Any]) -> Result:
    return untrusted.fields(trade, OPEN_TRADE_FIELDS)


PROFIT_FIELDS = (
    "profit_closed_coin",
    "profit_closed_ratio",
    "profit_closed_percent",
    "profit_all_coin",
    "profit_all_ratio",
    "profit_all_percent",
    "trade_count",
    "closed_trade_count",
    "first_trade_date",
    "latest_trade_date",
    "avg_duration",
    "best_pair",
    "best_pair_profit_ratio",
    "winning_trades",
    "losing_trades",
    "winrate",
    "profit_factor",
    "expectancy",
    "expectancy_ratio",
    "max_drawdown",
    "max_drawdown_abs",
    "sharpe",
    "sortino",
    "calmar",
    "bot_start_date",
)


def _profit(profit: dict[str, Any]) -> Result:
    return {key: profit[key] for key in PROFIT_FIELDS if key in profit}


async def get_open_trades(ctx: ToolContext, args: BotArgs) -> Result:
    bot = await ctx.api.bot(ctx.caller, args.bot_id)
    _, api = _running_here(ctx, bot)
    try:
        trades = await api.status()
    except BotApiError:
        raise _bot_unanswered(args.bot_id) from None
    return {
        "bot_id": str(args.bot_id),
        "read_at": datetime.now(UTC).isoformat(),
        "open_trades": [_open_trade(t) for t in trades],
    }


async def get_trades(ctx: ToolContext, args: TradesArgs) -> Result:
    rows = await ctx.api.request(
        ctx.caller, "GET", f"/bots/{args.bot_id}/trades", params={"limit": args.limit, "offset": args.offset}
    )
    trades = [untrusted.fields(t) for t in rows if isinstance(t, dict)] if isinstance(rows, list) else []
    return {"bot_id": str(args.bot_id), "count": len(trades), "offset": args.offset, "trades": trades}


async def get_performance(ctx: ToolContext, args: BotArgs) -> Result:
    bot = await ctx.api.bot(ctx.caller, args.bot_id)
    _, api = _running_here(ctx, bot)
    try:
        profit = await api.profit()
    except BotApiError:
        raise _bot_unanswered(args.bot_id) from None
    return {"bot_id": str(args.bot_id), "read_at": datetime.now(UTC).isoformat(), "performance": _profit(profit)}


async def get_logs(ctx: ToolContext, args: LogsArgs) -> Result:
    bot = await ctx.api.bot(ctx.caller, args.bot_id)
    found = await bot_log(ctx.fleet, args.bot_id, args.limit)
    if found is None:
        raise ToolFailure(
            f"Bot {args.bot_id} does not run on this gateway ({ctx.gateway_id}): {_where(bot, ctx.gateway_id)}."
        )
    source, lines = found
    return {
        "bot_id": str(args.bot_id),
        "source": source,
        "lines": [untrusted.clean(line, untrusted.LINE) for line in lines],
    }


# ====================================================================== actions through the management server


def _acted(bot: Any) -> Result:
    if not isinstance(bot, dict):
        raise ToolFailure("The management server answered something unexpected; check with get_bot.")
    return bot_summary(bot) | {"command_id": bot.get("command_id"), "notice": bot.get("notice")}


def _action(verb: str) -> Callable[[ToolContext, BotArgs], Awaitable[Result]]:
    async def act(ctx: ToolContext, args: BotArgs) -> Result:
        return _acted(await ctx.api.request(ctx.caller, "POST", f"/bots/{args.bot_id}/{verb}"))

    return act


async def force_exit(ctx: ToolContext, args: ForceExitArgs) -> Result:
    out = await ctx.api.request(ctx.caller, "POST", f"/bots/{args.bot_id}/forceexit", json={"trade_id": args.trade_id})
    return _acted(out) | {"trade_id": args.trade_id}


async def deploy_model(ctx: ToolContext, args: DeployModelArgs) -> Result:
    out = await ctx.api.request(ctx.caller, "POST", f"/bots/{args.bot_id}/model", json={"model_id": str(args.model_id)})
    return {"bot_id": str(args.bot_id), "model_id": str(args.model_id), "result": out}


async def rollback_model(ctx: ToolContext, args: BotArgs) -> Result:
    out = await ctx.api.request(ctx.caller, "POST", f"/bots/{args.bot_id}/model/rollback")
    return {"bot_id": str(args.bot_id), "result": out}


async def list_models(ctx: ToolContext, args: NoArgs) -> Result:
    out = await ctx.api.request(ctx.caller, "GET", "/models")
    models = out if isinstance(out, list) else []
    return {"models": models}


async def get_predictions(ctx: ToolContext, args: PredictionsArgs) -> Result:
    params = {"pair": args.pair} if args.pair else None
    out = await ctx.api.request(ctx.caller, "GET", f"/bots/{args.bot_id}/predictions", params=params)
    return {"bot_id": str(args.bot_id), "predictions": out}


# ====================================================================== emergency stop

NOT_CONFIRMED = (
    "emergency_stop was not confirmed, so nothing was done. It stops the bots' entries, exits every open trade "
    'at market, stops the bots and ends their processes; they stay halted until started again. Call it again with "'
    'confirm": true to go ahead.'
)


async def emergency_stop(ctx: ToolContext, args: EmergencyArgs) -> Result:
    if not args.confirm:
        raise ToolFailure(NOT_CONFIRMED)
    caller = ctx.caller
    if args.scope == "all" and not caller.is_admin:
        if caller.role == "admin":
            raise ToolDenied(
                "This personal access token lacks the 'admin' scope: halting the whole fleet needs it (use a token "
                'with it, or scope "mine", or name your bots in bot_ids).'
            )
        raise ToolDenied('Only an admin may halt the whole fleet: use scope "mine" or name your bots in bot_ids.')
    wanted = await _emergency_targets(ctx, args)
    local_ids = None if wanted is None else [b for b in wanted if ctx.fleet.bot(b) is not None]
    reason = f"MCP emergency_stop by {caller.label}" + (f": {args.reason}" if args.reason else "")

    async def here() -> Result | None:
        if local_ids is not None and not local_ids:
            return None
        data = await ctx.fleet.emergency_stop(local_ids, requested_by=f"mcp:{caller.label}", reason=reason)
        return jsonable(data.model_dump())  # type: ignore[no-any-return]

    async def management() -> Any:
        body: Result = {"reason": reason[:500]}
        body |= {"scope": args.scope} if args.scope is not None else {"bot_ids": [str(b) for b in args.bot_ids or []]}
        return await ctx.api.request(caller, "POST", "/emergency-stop", json=body)

    outcomes = await asyncio.gather(here(), management(), return_exceptions=True)
    local_result: Result | BaseException | None = outcomes[0]
    remote_result: Any = outcomes[1]
    for outcome in (local_result, remote_result):
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome
    result: Result = {"confirmed": True}
    if isinstance(local_result, Exception):
        log.error("local emergency stop failed", error=repr(local_result))
        result["this_gateway"] = {"error": "the local emergency stop failed; see the gateway's log"}
    else:
        result["this_gateway"] = local_result or {
            "gateway_id": ctx.gateway_id,
            "results": [],
            "note": "none of these bots runs on this gateway",
        }
    if isinstance(remote_result, ToolProblem):
        result["management"] = {"error": remote_result.message}
    elif isinstance(remote_result, Exception):
        log.error("emergency stop: telling the management server failed", error=repr(remote_result))
        result["management"] = {"error": "telling the management server failed; see the gateway's log"}
    else:
        result["management"] = remote_result
    if isinstance(remote_result, Exception) and not (isinstance(local_result, dict) and local_result.get("results")):
        raise ToolFailure(
            "Nothing was halted on this gateway, and the management server could not be told: "
            + (remote_result.message if isinstance(remote_result, ToolProblem) else "see the gateway's log")
        )
    return result


async def _emergency_targets(ctx: ToolContext, args: EmergencyArgs) -> list[uuid.UUID] | None:
    """The bots to halt (None: every bot of this gateway), checked against what the caller may halt."""
    caller = ctx.caller
    if args.scope == "all":
        return None
    if caller.is_admin and args.bot_ids is not None:
        return list(dict.fromkeys(args.bot_ids))  # an admin may halt any bot, even with the management server away
    try:
        bots = await ctx.api.bots(caller, fresh=True)  # a bot made a moment ago is the caller's too
    except ToolProblem as exc:
        raise ToolFailure(
            f"Nothing was halted: the management server could not confirm which bots are yours ({exc.message}). "
            "An admin can halt this gateway's bots at once with its local kill switch (POST /api/v1/emergency-stop)."
        ) from None
    if args.scope == "mine":
        return [uuid.UUID(str(b["id"])) for b in bots if str(b.get("owner_id")) == str(caller.subject)]
    owned = {str(b.get("id")) for b in bots}
    requested = list(dict.fromkeys(args.bot_ids or []))
    missing = [str(b) for b in requested if str(b) not in owned]
    if missing:
        raise ToolFailure(f"No such bot: {missing[0]}. Nothing was halted.")
    return requested


# ====================================================================== the registry


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    arguments: type[Args]
    scope: Scope
    annotations: ToolAnnotations
    run: Callable[[ToolContext, Any], Awaitable[Result]]

    def input_schema(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    def target(self, args: Any) -> Target | None:
        bot_id = getattr(args, "bot_id", None)
        if bot_id is not None:
            return Target("bot", str(bot_id))
        if isinstance(args, EmergencyArgs):
            return Target("fleet", args.scope) if args.scope else Target("bots", f"{len(args.bot_ids or [])} bots")
        return None


def _read(title: str) -> ToolAnnotations:
    return ToolAnnotations(title=title, read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def _act(title: str, *, destructive: bool, idempotent: bool) -> ToolAnnotations:
    # open world: these reach a Freqtrade bot that trades on an exchange
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=True,
    )


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "list_bots",
        "List bots",
        "Your bots (an admin's: all bots) with desired and actual state, and live figures for those on this gateway.",
        NoArgs,
        Scope.read,
        _read("List bots"),
        list_bots,
    ),
    ToolSpec(
        "get_bot",
        "Get a bot",
        "One bot: its configuration, desired and actual state, and its live status (Freqtrade's state, open "
        "trades, profit) read now from this gateway, or the last status its gateway reported.",
        BotArgs,
        Scope.read,
        _read("Get a bot"),
        get_bot,
    ),
    ToolSpec(
        "get_open_trades",
        "Open trades",
        "The bot's open trades, read now from the running bot (it must run on this gateway).",
        BotArgs,
        Scope.read,
        _read("Open trades"),
        get_open_trades,
    ),
    ToolSpec(
        "get_trades",
        "Trade history",
        "The bot's trades as recorded by the management server, newest first (paged with limit and offset).",
        TradesArgs,
        Scope.read,
        _read("Trade history"),
        get_trades,
    ),
    ToolSpec(
        "get_performance",
        "Performance",
        "Profit and performance figures read now from the running bot (Freqtrade's /profit: profit closed and "
        "open, win rate, drawdown, profit factor, expectancy, Sharpe...).",
        BotArgs,
        Scope.read,
        _read("Performance"),
        get_performance,
    ),
    ToolSpec(
        "get_logs",
        "Bot logs",
        "The bot's latest log lines, with secrets, tokens and passwords masked.",
        LogsArgs,
        Scope.read,
        _read("Bot logs"),
        get_logs,
    ),
    ToolSpec(
        "start_bot",
        "Start a bot",
        "Start the bot (desired state running); it trades once its gateway has started it (watch get_bot).",
        BotArgs,
        Scope.trade,
        _act("Start a bot", destructive=False, idempotent=True),
        _action("start"),
    ),
    ToolSpec(
        "stop_bot",
        "Stop a bot",
        "Stop the bot; its open trades stay open in its database and are no longer managed until it starts again.",
        BotArgs,
        Scope.trade,
        _act("Stop a bot", destructive=True, idempotent=True),
        _action("stop"),
    ),
    ToolSpec(
        "pause_bot",
        "Pause a bot",
        "No new entries; open trades are still managed (Freqtrade's stopentry). Resume with resume_bot.",
        BotArgs,
        Scope.trade,
        _act("Pause a bot", destructive=False, idempotent=True),
        _action("pause"),
    ),
    ToolSpec(
        "resume_bot",
        "Resume a bot",
        "Let a paused bot enter trades again.",
        BotArgs,
        Scope.trade,
        _act("Resume a bot", destructive=False, idempotent=True),
        _action("resume"),
    ),
    ToolSpec(
        "force_exit",
        "Exit trades now",
        'Close one open trade of the bot (trade_id) or all of them ("all") at market.',
        ForceExitArgs,
        Scope.trade,
        _act("Exit trades now", destructive=True, idempotent=False),
        force_exit,
    ),
    ToolSpec(
        "emergency_stop",
        "Emergency stop",
        "Halt bots now: stop entries, exit every open trade at market, stop the bots and end their processes, "
        'here at once and on every gateway through the management server. Needs "confirm": true, and either '
        'bot_ids or scope ("mine"; "all" is for admins). Halted bots stay down until started again.',
        EmergencyArgs,
        Scope.trade,
        _act("Emergency stop", destructive=True, idempotent=True),
        emergency_stop,
    ),
    ToolSpec(
        "list_models",
        "List FreqAI models",
        "The FreqAI model versions you can deploy (an admin: all), with their training status.",
        NoArgs,
        Scope.read,
        _read("List FreqAI models"),
        list_models,
    ),
    ToolSpec(
        "deploy_model",
        "Deploy a FreqAI model",
        "Deploy a trained FreqAI model version to the bot (it is loaded without restarting the bot).",
        DeployModelArgs,
        Scope.trade,
        _act("Deploy a FreqAI model", destructive=False, idempotent=True),
        deploy_model,
    ),
    ToolSpec(
        "rollback_model",
        "Roll back a FreqAI model",
        "Put the bot's previous FreqAI model version back.",
        BotArgs,
        Scope.trade,
        _act("Roll back a FreqAI model", destructive=False, idempotent=False),
        rollback_model,
    ),
    ToolSpec(
        "get_predictions",
        "FreqAI predictions",
        "The bot's latest FreqAI outputs (predictions per pair).",
        PredictionsArgs,
        Scope.read,
        _read("FreqAI predictions"),
        get_predictions,
    ),
)
TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}
