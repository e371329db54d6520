"""A bot's trade database in PostgreSQL (``FREQFLEET_BOT_DB=postgres``): names and URLs both services agree on.

Each bot has a database and a role of one name, ``ffbot_<bot id as 32 hex digits>``; the role owns the database,
may log in only to it (the embedded server's ``pg_hba.conf`` says ``sameuser``; on another server the management
server revokes ``CONNECT`` on each bot's database from everyone else), and its password travels to the bot's gateway
only sealed to that gateway (:func:`shared.sealing.seal_database`). Freqtrade reaches it through SQLAlchemy with the
psycopg (3) driver.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote, urlsplit

POSTGRES_DRIVER = "postgresql+psycopg"
PREFIX = "ffbot_"
NAME_PATTERN = rf"^{PREFIX}[0-9a-f]{{32}}$"
_NAME = re.compile(NAME_PATTERN)


def database_name(bot_id: uuid.UUID) -> str:
    """The name of bot ``bot_id``'s database and of its role."""
    return f"{PREFIX}{bot_id.hex}"


def is_bot_database(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def bot_url(name: str, password: str, host: str, port: int) -> str:
    """What Freqtrade's ``db_url`` says for the bot whose database and role are ``name``."""
    if not is_bot_database(name):
        raise ValueError(f"{name!r} is not a bot's database name")
    bracketed = f"[{host}]" if ":" in host else host
    return f"{POSTGRES_DRIVER}://{name}:{quote(password, safe='')}@{bracketed}:{port}/{name}"


def url_port(url: str) -> int | None:
    """The TCP port of a PostgreSQL URL (None for SQLite, or a URL naming none)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgresql"):
        return None
    return parts.port
