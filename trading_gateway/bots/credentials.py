"""Per-bot REST API credentials: random for every spawn, kept only by the gateway.

They live in the bot's ``config.json`` (mode 0600, in a 0700 folder) and in the gateway's state
file (mode 0600), and nowhere else: never in a log line, an event or an API answer. A new set is
made for every spawn, so an old incarnation of a bot (or another bot on a reused port) can never
pass the identity check of a new one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ApiCredentials:
    username: str
    password: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    ws_token: str = field(repr=False)

    @classmethod
    def generate(cls) -> ApiCredentials:
        return cls(
            username=f"freqfleet-{secrets.token_hex(4)}",
            password=secrets.token_urlsafe(32),
            jwt_secret=secrets.token_hex(32),  # Freqtrade wants at least 32 characters
            ws_token=secrets.token_urlsafe(24),
        )
