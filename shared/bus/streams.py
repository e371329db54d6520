"""Stream and group names, and how long streams are kept.

Trimming is approximate (``MINID ~`` / ``MAXLEN ~``): Redis trims whole macro nodes, which is far cheaper than
exact trimming. The two streams that carry work are bounded by **time**, so no burst of entries, however fast,
can push out one that is not consumed yet:

- ``freqfleet:events`` keeps what is younger than ``events_max_age`` (6 h by default) while the management server
  is away; once consumed, an entry is trimmed by its consumer after ``consumed_keep`` (see ``retention.py``), so
  in normal operation the stream holds minutes of events, whatever the rate.
- a gateway's command stream keeps ``command_max_age`` (1 h): an older command is refused anyway.

Dead letters are kept by count (``MAXLEN ~ 100,000``): they wait for a person, not a process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EVENTS_STREAM = "freqfleet:events"
MANAGEMENT_GROUP = "management"
DEAD_LETTER_SUFFIX = ":dead"
COMMANDS_PREFIX = "freqfleet:commands:"

COMMANDS_MAXLEN = 50_000  # only where no age applies (a dead letter replayed onto its stream)
DEAD_LETTER_MAXLEN = 100_000
DEFAULT_COMMAND_MAX_AGE = 3600.0
DEFAULT_EVENTS_MAX_AGE = 6 * 3600.0


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
    return COMMANDS_MAXLEN


def id_at(seconds: float) -> str:
    """The smallest stream entry id of that Unix time."""
    return f"{int(seconds * 1000)}-0"


def entry_time(entry_id: str) -> float:
    """When an entry was added (Unix time), from its id."""
    return int(entry_id.split("-", 1)[0]) / 1000


@dataclass(frozen=True)
class Retention:
    """How long the streams that carry work keep an entry (``FREQFLEET_COMMAND_MAX_AGE``,
    ``FREQFLEET_EVENTS_MAX_AGE``)."""

    command_max_age: float = DEFAULT_COMMAND_MAX_AGE
    events_max_age: float = DEFAULT_EVENTS_MAX_AGE

    def max_age(self, stream: str) -> float | None:
        """Seconds an entry of ``stream`` is kept at most; None for a stream bounded by count."""
        if is_commands_stream(stream):
            return self.command_max_age
        if stream == EVENTS_STREAM:
            return self.events_max_age
        return None

    def trim(self, stream: str, now: float) -> dict[str, Any]:
        """The trimming arguments of an ``XADD`` to ``stream`` at ``now``."""
        age = self.max_age(stream)
        if age is None:
            return {"maxlen": maxlen_for(stream), "approximate": True}
        return {"minid": id_at(now - age), "approximate": True}
