"""Copy a bot's trades from its SQLite file into its PostgreSQL database, then prove that every row came across.

``python -m shared.trade_db_copy`` reads ``{"from": <sqlite URL>, "to": <postgresql+psycopg URL>}`` on stdin (the
target's password never on a command line) and prints one JSON line: ``{"ok": true, "rows": {"trades": 52,
"orders": 104, ...}}`` or ``{"ok": false, "error": "..."}`` (exit 1). The gateway runs it in the bot's sandbox
(:mod:`trading_gateway.fleet.trade_db`): its folder, and the database's port, nothing else.

The copy is Freqtrade's own (``freqtrade convert-db``'s :func:`freqtrade.persistence.db_migration.migrate_db`: trades
with their orders, pair locks, key-value store, custom data and wallet history, then the sequences past the highest
ids); opening the SQLite file first brings an older schema up to this Freqtrade's. The check is ours: every table of
Freqtrade's schema, read back from both databases in primary-key order through the same column types, must be equal,
row for row and column for column. The target must hold no trades before (a copy is never merged into another).
"""

from __future__ import annotations

import json
import sys
from typing import Any


class CopyError(Exception):
    pass


def _rows(engine: Any, table: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import select

    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key.columns))]


def verify(source_url: str, target_url: str) -> dict[str, int]:
    """Rows per table, when both databases hold the same rows in every table of Freqtrade's schema."""
    from freqtrade.persistence.base import ModelBase  # type: ignore[import-untyped]
    from sqlalchemy import create_engine

    source, target = create_engine(source_url), create_engine(target_url)
    counts: dict[str, int] = {}
    try:
        for table in ModelBase.metadata.sorted_tables:
            here, there = _rows(source, table), _rows(target, table)
            if here != there:
                first = next((a for a, b in zip(here, there, strict=False) if a != b), None)
                where = f"first difference at {table.name} key {first[0]!r}" if first else "rows missing"
                raise CopyError(
                    f"table {table.name}: {len(here)} rows in SQLite, {len(there)} in PostgreSQL, not equal ({where})"
                )
            counts[table.name] = len(here)
    finally:
        source.dispose()
        target.dispose()
    return counts


def copy(source_url: str, target_url: str) -> dict[str, int]:
    """Copy ``source_url``'s trades into the empty ``target_url``, then :func:`verify` them."""
    from freqtrade.persistence import Trade, init_db  # type: ignore[import-untyped]
    from freqtrade.persistence.db_migration import migrate_db  # type: ignore[import-untyped]
    from sqlalchemy import func, select

    init_db(target_url)  # Freqtrade's tables in the target (a new database has none)
    target = Trade.session
    already = target.scalar(select(func.count()).select_from(Trade))
    if already:
        raise CopyError(f"the PostgreSQL database holds {already} trades already: a copy is never merged into them")
    init_db(source_url)
    migrate_db(target)
    target.remove()
    Trade.session.remove()
    return verify(source_url, target_url)


def _password(order: Any) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(str(order["to"])).password
    except (KeyError, TypeError, ValueError):  # no order read, or not one
        return None
    return unquote(password) if password else None


def main() -> int:
    order: Any = None
    try:
        order = json.loads(sys.stdin.read())
        rows = copy(str(order["from"]), str(order["to"]))
    except Exception as exc:  # reported to the gateway, which refuses the command with it
        error = f"{type(exc).__name__}: {str(exc)[:800]}"
        secret = _password(order)
        print(json.dumps({"ok": False, "error": error.replace(secret, "***") if secret else error}), flush=True)
        return 1
    print(json.dumps({"ok": True, "rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
