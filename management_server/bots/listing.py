"""The bot list as JSON, straight from its rows.

``GET /api/v1/bots`` answers up to 1,000 bots at a time, and a dashboard polls it. Going through SQLAlchemy's
result rows, a ``BotOut`` per bot and pydantic's serializer cost about 20 µs per bot of server CPU; here PostgreSQL
already writes what needs writing (the JSONB columns as their JSON text, the decimals as ``BotOut`` shows them:
``10``, not ``10.00000000``, and ``unlimited`` for no stake), asyncpg reads the rows on the request's own
connection, and orjson writes the list, embedding the JSONB texts as they are (``orjson.Fragment``). UUIDs,
datetimes and floats come out as pydantic writes them (``Z`` for UTC, the shortest float that reads back), so
the answer is ``list[BotOut]``'s JSON, value for value; ``tests/management_server/bots/test_listing.py`` holds
it to that for every field of ``BotOut``, and fails when ``BotOut`` gains a field this module doesn't write.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Uuid
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots.models import Bot
from management_server.bots.schemas import BotOut
from management_server.db import fetch_raw
from management_server.users.viewer import Viewer

COLUMNS = tuple(BotOut.model_fields)
# What BotOut shows that is not a column as it is: the JSON text PostgreSQL makes of columns (``{table}``: the alias)
_DERIVED = {
    "placement": "CASE WHEN {table}pinned_gateway_id IS NULL THEN NULL "
    "ELSE json_build_object('gateway_id', {table}pinned_gateway_id)::text END",
}
_JSON_TEXT = frozenset({"pairs", "freqai", *_DERIVED})  # JSON read as text, written into the answer as it is
_STORED = Bot.__table__.c
_SHOWN = set(COLUMNS) - set(_DERIVED)
assert set(_STORED.keys()) >= _SHOWN, f"BotOut shows what bots don't store: {_SHOWN - set(_STORED.keys())}"
_UUIDS = frozenset(name for name in _SHOWN if isinstance(_STORED[name].type, Uuid))  # asyncpg's UUID isn't orjson's
_TABLE = Bot.__tablename__


def as_shown(name: str, table: str = "") -> str:
    """How PostgreSQL writes the bot's column ``name`` as ``BotOut`` shows it (``table``: an alias to qualify it
    with, as ``"b."``): decimals as written (``10``, ``unlimited`` for no stake), JSONB as its text, UUIDs as text."""
    column = f"{table}{name}"
    if name in _DERIVED:
        return _DERIVED[name].format(table=table)
    if name == "stake_amount":
        return f"coalesce(trim_scale({column})::text, 'unlimited')"
    if name == "dry_run_wallet":
        return f"trim_scale({column})::text"
    if name in _JSON_TEXT or name in _UUIDS:
        return f"{column}::text"
    return column


def embed_json_text(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its JSONB columns' text written into the answer as it is."""
    for name in _JSON_TEXT:
        if (text := row.get(name)) is not None:
            row[name] = orjson.Fragment(text)
    return row


_SELECT = ", ".join(f"{as_shown(name)} AS {name}" for name in COLUMNS)


@dataclass(frozen=True)
class Page:
    body: bytes  # the JSON list
    count: int
    last: tuple[datetime, uuid.UUID] | None  # the key of its last bot (where a next page starts)


def _query(viewer: Viewer, limit: int, offset: int, after: tuple[datetime, uuid.UUID] | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if not viewer.admin:
        args.append(viewer.user.id)
        where.append(f"owner_id = ${len(args)}")
    if after is not None:
        args.extend(after)
        where.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
    args.extend((limit, offset))
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    page = f"LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    # Only this module's constants and $n placeholders go into the text; every value is a parameter.
    return f"SELECT {_SELECT} FROM {_TABLE}{condition} ORDER BY created_at, id {page}", args  # noqa: S608


async def page(
    session: AsyncSession, viewer: Viewer, limit: int, offset: int, after: tuple[datetime, uuid.UUID] | None = None
) -> Page:
    """The viewer's bots (an admin: everyone's), oldest first, after the key ``after`` (a page's cursor), as the
    JSON of ``list[BotOut]``. Read on the session's connection, in its transaction if one is open."""
    sql, args = _query(viewer, limit, offset, after)
    records = await fetch_raw(session, sql, *args)
    rows = [embed_json_text(dict(record.items())) for record in records]
    last = (records[-1]["created_at"], uuid.UUID(records[-1]["id"])) if records else None
    return Page(orjson.dumps(rows, option=orjson.OPT_UTC_Z), len(rows), last)
