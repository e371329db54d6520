"""Stream and group names, and how long streams are kept.

Trimming is approximate (``MAXLEN ~``): Redis trims whole macro nodes, which is far
cheaper than exact trimming. The limits are sized well above the worst backlog we
expect: events are dominated by BOT_STATUS (one per bot every 5 s) and heartbeats, so
a fleet of 200 bots writes about 40 events/s and 200,000 entries hold well over an
hour of it — far longer than a management server restart or a Redis failover. A
gateway receives a handful of commands per bot per day; 50,000 is weeks of them.
"""

from __future__ import annotations

EVENTS_STREAM = "freqfleet:events"
MANAGEMENT_GROUP = "management"
DEAD_LETTER_SUFFIX = ":dead"
COMMANDS_PREFIX = "freqfleet:commands:"

EVENTS_MAXLEN = 200_000
COMMANDS_MAXLEN = 50_000
DEAD_LETTER_MAXLEN = 100_000


def commands_stream(gateway_id: str) -> str:
    """Commands for one gateway."""
    return f"{COMMANDS_PREFIX}{gateway_id}"


def is_commands_stream(stream: str) -> bool:
    return stream.startswith(COMMANDS_PREFIX) and not stream.endswith(DEAD_LETTER_SUFFIX)


def gateway_group(gateway_id: str) -> str:
    return f"gateway:{gateway_id}"


def dead_letter_stream(stream: str) -> str:
    return stream + DEAD_LETTER_SUFFIX


def maxlen_for(stream: str) -> int:
    if stream.endswith(DEAD_LETTER_SUFFIX):
        return DEAD_LETTER_MAXLEN
    if stream == EVENTS_STREAM:
        return EVENTS_MAXLEN
    return COMMANDS_MAXLEN
