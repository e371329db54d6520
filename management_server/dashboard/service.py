"""The fleet as the dashboard shows it: one row per bot the viewer may see, straight from the database.

One query reads every visible bot with what its page needs at a glance (the bot's settings, its states, and what
its gateway last reported: Freqtrade's state, open trades, profit and drawdown from Freqtrade's ``/profit``), and
writes the JSON as ``bots/listing.py`` does (asyncpg rows, orjson). A report's numbers are taken only where they
are JSON numbers: a report is a gateway's word, not ours. Problems are named, not only counted:

- errors: the bot's last error, a state that needs a person (``failed``, ``orphaned``, ``lost``);
- warnings: a risk pause, a rejected model, the reconciler retrying, a gateway not heard from (``unknown``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots.listing import as_shown, embed_json_text
from management_server.db import fetch_raw
from management_server.users.viewer import Viewer


def _number(path: str) -> str:
    """A number of the last report, or NULL when it isn't one."""
    return f"CASE WHEN jsonb_typeof(b.last_status #> '{path}') = 'number' THEN (b.last_status #>> '{path}')::float8 END"


_BOT_COLUMNS = (  # the bot's own columns, written as BotOut shows them (bots/listing.py)
    "id", "name", "owner_id", "gateway_id", "desired_state", "actual_state", "dry_run", "exchange", "stake_currency",
    "stake_amount", "dry_run_wallet", "pairs", "timeframe", "max_open_trades", "last_error", "risk_reason",
    "model_state", "reconcile_attempts", "last_status_at", "created_at",
)  # fmt: skip
_COLUMNS = {name: as_shown(name, "b.") for name in _BOT_COLUMNS} | {
    "owner": "u.email",
    "freqtrade_state": "CASE WHEN jsonb_typeof(b.last_status -> 'state') = 'string' THEN b.last_status ->> 'state' END",
    "open_trades": "CASE WHEN jsonb_typeof(b.last_status -> 'open_trades') = 'array' "
    "THEN jsonb_array_length(b.last_status -> 'open_trades') ELSE 0 END",
    "profit_abs": _number("{profit,profit_all_coin}"),
    "profit_ratio": _number("{profit,profit_all_ratio}"),
    "drawdown_ratio": _number("{profit,max_drawdown}"),
    "drawdown_abs": _number("{profit,max_drawdown_abs}"),
    "closed_trades": _number("{profit,closed_trade_count}"),
}
_SELECT = ", ".join(f"{sql} AS {name}" for name, sql in _COLUMNS.items())
NEEDS_A_PERSON = frozenset({"failed", "orphaned", "lost"})


def problems(row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The bot's errors and warnings, in words."""
    errors, warnings = [], []
    if row["last_error"]:
        errors.append(str(row["last_error"])[:300])
    if row["actual_state"] in NEEDS_A_PERSON:
        errors.append(f"the bot is {row['actual_state']}")
    if row["risk_reason"]:
        warnings.append(f"paused by the risk guard: {row['risk_reason']}"[:300])
    if row["model_state"] == "rejected":
        warnings.append("its latest model was rejected")
    if row["reconcile_attempts"]:
        warnings.append(f"the reconciler retried {row['reconcile_attempts']} time(s)")
    if row["actual_state"] == "unknown":
        warnings.append("its gateway has not reported for a while")
    return errors, warnings


async def fleet(session: AsyncSession, viewer: Viewer) -> bytes:
    """``{"bots": [...], "admin": ...}``: the viewer's bots (an admin: everyone's, with owners' emails), oldest
    first."""
    rows = await fleet_rows(session, None if viewer.admin else viewer.user.id)
    if not viewer.admin:
        for row in rows:
            row.pop("owner")
    return orjson.dumps({"bots": rows, "admin": viewer.admin}, option=orjson.OPT_UTC_Z)


async def fleet_rows(
    session: AsyncSession, owner_id: uuid.UUID | None, bot_ids: Iterable[uuid.UUID] | None = None
) -> list[dict[str, Any]]:
    """The rows of ``owner_id``'s bots (None: everyone's), with their owners' emails; only ``bot_ids`` if given."""
    where: list[str] = []
    args: list[Any] = []
    if owner_id is not None:
        args.append(owner_id)
        where.append(f"b.owner_id = ${len(args)}")
    if bot_ids is not None:
        args.append(list(bot_ids))
        where.append(f"b.id = ANY(${len(args)}::uuid[])")
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {_SELECT} FROM bots b JOIN users u ON u.id = b.owner_id{condition} ORDER BY b.created_at, b.id"  # noqa: S608
    rows = []
    for record in await fetch_raw(session, sql, *args):
        row = embed_json_text(dict(record.items()))
        row["errors"], row["warnings"] = problems(row)
        rows.append(row)
    return rows
