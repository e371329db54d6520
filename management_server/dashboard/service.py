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

from management_server.users.viewer import Viewer


def _number(path: str, cast: str = "float8") -> str:
    """A number of the last report, or NULL when it isn't one."""
    return f"CASE WHEN jsonb_typeof(b.last_status #> '{path}') = 'number' THEN (b.last_status #>> '{path}')::{cast} END"


_COLUMNS = {
    "id": "b.id::text",
    "name": "b.name",
    "owner_id": "b.owner_id::text",
    "owner": "u.email",
    "gateway_id": "b.gateway_id",
    "desired_state": "b.desired_state",
    "actual_state": "b.actual_state",
    "dry_run": "b.dry_run",
    "exchange": "b.exchange",
    "stake_currency": "b.stake_currency",
    "stake_amount": "coalesce(trim_scale(b.stake_amount)::text, 'unlimited')",
    "dry_run_wallet": "trim_scale(b.dry_run_wallet)::text",
    "pairs": "b.pairs::text",
    "timeframe": "b.timeframe",
    "max_open_trades": "b.max_open_trades",
    "last_error": "b.last_error",
    "risk_reason": "b.risk_reason",
    "model_state": "b.model_state",
    "reconcile_attempts": "b.reconcile_attempts",
    "last_status_at": "b.last_status_at",
    "freqtrade_state": "CASE WHEN jsonb_typeof(b.last_status -> 'state') = 'string' THEN b.last_status ->> 'state' END",
    "open_trades": "CASE WHEN jsonb_typeof(b.last_status -> 'open_trades') = 'array' "
    "THEN jsonb_array_length(b.last_status -> 'open_trades') ELSE 0 END",
    "profit_abs": _number("{profit,profit_all_coin}"),
    "profit_ratio": _number("{profit,profit_all_ratio}"),
    "drawdown_ratio": _number("{profit,max_drawdown}"),
    "drawdown_abs": _number("{profit,max_drawdown_abs}"),
    "closed_trades": _number("{profit,closed_trade_count}", "float8"),
    "created_at": "b.created_at",
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
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    rows = []
    for record in await driver.fetch(sql, *args):
        row = dict(record.items())
        row["pairs"] = orjson.Fragment(row["pairs"])
        row["errors"], row["warnings"] = problems(row)
        rows.append(row)
    return rows
