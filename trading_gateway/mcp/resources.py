"""The MCP resources: ``fleet://summary``, ``bot://{id}/status`` and ``bot://{id}/trades``.

Each is JSON (``application/json``), read with the same rules as the tools (the ``read`` scope;
only the caller's bots, an admin's all): ``fleet://summary`` counts the caller's bots by desired
and actual state with this gateway's live figures, ``bot://{id}/status`` is what ``get_bot``
answers, ``bot://{id}/trades`` the latest trades as ``get_trades`` answers them. ``resources/list``
names the summary and the status of each of the caller's bots; ``resources/templates/list`` gives
both bot templates.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mcp_types import Resource, ResourceTemplate

from trading_gateway.mcp import untrusted
from trading_gateway.mcp.audit import Target
from trading_gateway.mcp.errors import ToolFailure
from trading_gateway.mcp.tools import ToolContext, bot_status, bot_summary

SUMMARY_URI = "fleet://summary"
STATUS_TEMPLATE = "bot://{bot_id}/status"
TRADES_TEMPLATE = "bot://{bot_id}/trades"
JSON = "application/json"
TRADES_LIMIT = 100
_BOT_URI = re.compile(r"^bot://(?P<bot_id>[^/]+)/(?P<what>status|trades)$")


class UnknownResource(Exception):
    """The URI names no resource of this server (or a bot the caller can't see)."""


@dataclass(frozen=True)
class ResourceRead:
    kind: str  # "summary", "status", "trades"
    bot_id: uuid.UUID | None

    @property
    def target(self) -> Target | None:
        return Target("bot", str(self.bot_id)) if self.bot_id is not None else Target("fleet", "summary")


def parse_uri(uri: str) -> ResourceRead:
    if uri == SUMMARY_URI:
        return ResourceRead("summary", None)
    match = _BOT_URI.match(uri)
    if match is None:
        raise UnknownResource(
            f"Unknown resource {uri[:200]!r}: read {SUMMARY_URI}, bot://<bot id>/status or bot://<bot id>/trades."
        )
    try:
        bot_id = uuid.UUID(match["bot_id"])
    except ValueError:
        raise UnknownResource(f"{match['bot_id'][:100]!r} is not a bot id (a UUID, see list_bots).") from None
    return ResourceRead(match["what"], bot_id)


def templates() -> list[ResourceTemplate]:
    return [
        ResourceTemplate(
            name="bot-status",
            title="A bot's status",
            uri_template=STATUS_TEMPLATE,
            description="Desired and actual state, and live status (open trades, profit), as get_bot answers.",
            mime_type=JSON,
        ),
        ResourceTemplate(
            name="bot-trades",
            title="A bot's trades",
            uri_template=TRADES_TEMPLATE,
            description=f"The bot's latest {TRADES_LIMIT} trades, newest first.",
            mime_type=JSON,
        ),
    ]


async def listed(ctx: ToolContext) -> list[Resource]:
    resources = [
        Resource(
            name="fleet-summary",
            title="Fleet summary",
            uri=SUMMARY_URI,
            description="Your bots by desired and actual state, with this gateway's live figures.",
            mime_type=JSON,
        )
    ]
    for bot in await ctx.api.bots(ctx.caller):
        # Titled by id: a bot's name is user text, and reaches agents only inside the resource's JSON.
        resources.append(
            Resource(
                name=f"bot-{bot.get('id')}-status",
                title=f"Bot {bot.get('id')} status",
                uri=STATUS_TEMPLATE.format(bot_id=bot.get("id")),
                description="A bot's status (its name and state are in the content).",
                mime_type=JSON,
            )
        )
    return resources


async def read(ctx: ToolContext, what: ResourceRead) -> dict[str, Any]:
    if what.kind == "summary":
        return await summary(ctx)
    assert what.bot_id is not None
    try:
        bot = await ctx.api.bot(ctx.caller, what.bot_id)
    except ToolFailure as exc:
        if exc.message == "No such bot.":
            raise UnknownResource(f"No such bot: {what.bot_id}.") from None
        raise
    if what.kind == "status":
        return await bot_status(ctx, bot)
    rows = await ctx.api.request(ctx.caller, "GET", f"/bots/{what.bot_id}/trades", params={"limit": TRADES_LIMIT})
    trades = [untrusted.fields(t) for t in rows if isinstance(t, dict)] if isinstance(rows, list) else []
    return {"bot_id": str(what.bot_id), "count": len(trades), "trades": trades}


async def summary(ctx: ToolContext) -> dict[str, Any]:
    bots = await ctx.api.bots(ctx.caller)
    local = {str(view.bot_id): view for view in ctx.fleet.views()}
    here = [local[str(b.get("id"))] for b in bots if str(b.get("id")) in local]
    return {
        "gateway_id": ctx.gateway_id,
        "bots": len(bots),
        "by_desired_state": dict(Counter(str(b.get("desired_state")) for b in bots)),
        "by_actual_state": dict(Counter(str(b.get("actual_state")) for b in bots)),
        "by_gateway": dict(Counter(str(b.get("gateway_id")) for b in bots if b.get("gateway_id"))),
        "on_this_gateway": {
            "bots": len(here),
            "by_actual_state": dict(Counter(view.actual for view in here)),
            "open_trades": sum(view.open_trades for view in here),
        },
        "bots_with_errors": [bot_summary(b) for b in bots if b.get("last_error")][:20],
    }
