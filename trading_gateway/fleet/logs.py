"""A bot's last log lines as its gateway can read them now, with its secrets taken out: for
``GET /api/v1/bots/{bot_id}/logs`` (the management server's ``/bots/{id}/logs`` reads them there) and MCP's
``get_logs``.

From the bot's REST API while it runs (Freqtrade's in-memory log), from its log file when it does not (or its API
does not answer). Every line is scrubbed before it leaves: the bot's own secrets (API password, JWT secret, WebSocket
token, a live bot's exchange key and secret, as its config holds them), anything shaped like a JWT, a bearer or
basic credential, a ``key=value`` secret, or a password in a URL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from shared.files import open_read_nofollow
from shared.settings import redact_url
from trading_gateway.bots.client import BotApiError
from trading_gateway.fleet.bot import ManagedBot, secrets_of
from trading_gateway.fleet.service import Fleet

MAX_LINES = 1000
TAIL_BYTES = 256 * 1024  # how much of a log file is read for its last lines

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_SECRET_VALUE = re.compile(
    r"(?i)([\"']?\b(?:password|passwd|pass|secret|token|api[_-]?key|apikey|jwt_secret_key|ws_token|private[_-]?key"
    r"|key)\b[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]+)"
)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@")


def redact_line(line: str, secrets: Sequence[str]) -> str:
    """A log line without the bot's secrets, tokens, passwords in URLs and ``key=value`` secrets."""
    for secret in secrets:
        if secret and secret in line:
            line = line.replace(secret, "***")
    line = _JWT.sub("***", line)
    line = _BEARER.sub(lambda m: f"{m.group(1)} ***", line)
    line = _SECRET_VALUE.sub(lambda m: f"{m.group(1)}***", line)
    return redact_url(_URL_PASSWORD.sub(lambda m: f"{m.group(1)}***@", line))


def _file_tail(bot: ManagedBot, limit: int) -> list[str]:
    for path in (bot.files.log, bot.files.console_log):
        try:
            with open_read_nofollow(path) as log_file:
                log_file.seek(0, 2)
                size = log_file.tell()
                log_file.seek(max(0, size - TAIL_BYTES))
                lines = log_file.read().decode(errors="replace").splitlines()
        except OSError:  # missing, or not a regular file (a symlink is never followed)
            continue
        if lines:
            return lines[-limit:]
    return []


async def bot_log(fleet: Fleet, bot_id: uuid.UUID, limit: int) -> tuple[str, list[str]] | None:
    """Where the lines were read, and the last ``limit`` of them, scrubbed; None when this gateway has no such bot."""
    bot = fleet.bot(bot_id)
    if bot is None:
        return None
    limit = max(1, min(limit, MAX_LINES))
    secrets = secrets_of(bot)  # the bot's API and exchange secrets, as they may appear in its log
    process, api = bot.process, bot.api
    if process is not None and api is not None and process.is_alive():
        try:
            lines = [str(line) for line in await api.logs(limit)]
            source = "the bot's Freqtrade API (its in-memory log)"
        except BotApiError:
            lines, source = _file_tail(bot, limit), "the bot's log file (its API did not answer)"
    else:
        lines, source = _file_tail(bot, limit), "the bot's log file (it has no running process)"
    return source, [redact_line(line, secrets) for line in lines[-limit:]]
