"""MIGRATE_TRADE_DB: a stopped bot's trades copied from the SQLite file in its folder into its PostgreSQL database.

The copy (:mod:`shared.trade_db_copy`: Freqtrade's own ``convert-db`` code, then every row of every table compared)
runs as a process of its own in the bot's sandbox (its uid, its folder, the database's port only), since the file it
reads was written by the bot's process, which runs user code. The database's URL reaches it on stdin, never on a
command line. Once the copy is proved, the SQLite file is renamed ``tradesv3.sqlite.migrated-<time>`` (kept: the
trades as they were, should anyone need them), so that nothing reads it as the bot's database again.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import shared
from shared.bus.messages import SealedDatabase
from shared.logging import get_logger
from shared.sandbox.host import hand_over
from shared.sandbox.policy import wrap
from shared.sealing import SealError
from shared.trade_db import url_port
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.process import bot_environment
from trading_gateway.fleet.bot import CommandRefused
from trading_gateway.fleet.service import Fleet

log = get_logger(__name__)

COPY_TIMEOUT = 600.0
COPY_SCRIPT = Path(shared.__file__).resolve().parent / "trade_db_copy.py"


async def migrate_trade_db(fleet: Fleet, bot_id: uuid.UUID, sealed: SealedDatabase) -> dict[str, int]:
    """Copy the bot's SQLite trades into its database; the rows per table (empty: the bot has no SQLite file here).

    :raises CommandRefused: the bot runs, the database was not sealed to this gateway, or the copy failed (why).
    """
    bot = fleet.bot(bot_id)
    if bot is not None and bot.process is not None and bot.process.is_alive():
        raise CommandRefused("the bot runs on this gateway: stop it before its trades move to PostgreSQL")
    try:
        url = fleet.identity.open_database(sealed, str(bot_id))
    except SealError as exc:
        raise CommandRefused(str(exc)) from None
    files = BotFiles(fleet.bots_root, str(bot_id))
    if not files.db.is_file():
        log.info("no SQLite trades to copy", bot_id=str(bot_id))
        return {}
    rows = await _copy(fleet, files, url)
    kept = files.db.with_name(f"{files.db.name}.migrated-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    files.db.rename(kept)
    for suffix in ("-wal", "-shm"):
        files.db.with_name(files.db.name + suffix).unlink(missing_ok=True)
    log.info("trades copied to PostgreSQL", bot_id=str(bot_id), rows=rows, sqlite_kept=kept.name)
    return rows


async def _copy(fleet: Fleet, files: BotFiles, url: str) -> dict[str, int]:
    argv = [sys.executable, "-I", str(COPY_SCRIPT)]
    sandboxing = fleet.supervisor.sandboxing
    if sandboxing is not None:
        host = sandboxing.host
        uid = sandboxing.uids.get(files.bot_id) if host.own_uids else None
        if uid is not None:
            hand_over(files.folder, uid)
        port = url_port(url)
        policy = host.policy(files.folder, env=bot_environment(), uid=uid, connect_ports=[] if port is None else [port])
        if policy is not None:
            argv = wrap(policy, argv)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=files.folder,
        env=bot_environment(),
    )
    order = json.dumps({"from": files.db_url, "to": url}).encode()
    try:
        out, err = await asyncio.wait_for(process.communicate(order), COPY_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise CommandRefused(f"copying the trades took over {COPY_TIMEOUT:.0f} s: stopped, nothing changed") from None
    try:
        report = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.decode(errors="replace").strip()[-500:]
        secret = urlsplit(url).password
        tail = tail.replace(unquote(secret), "***") if secret else tail
        raise CommandRefused(
            f"the copy of the trades ended without a report (exit {process.returncode}): {tail}"
        ) from None
    if not report.get("ok"):
        raise CommandRefused(f"the trades could not be copied to PostgreSQL: {report.get('error')}")
    return {str(k): int(v) for k, v in report["rows"].items()}
