"""The gateway's state file: what it knows about its bots' processes, so a new gateway can adopt them.

One JSON file (``{"version": 1, "bots": [...]}``) holds a :class:`BotRecord` per bot: the desired
state the gateway was told, the process it runs (pid *and* process start time: a pid alone may have
been reused by an unrelated program), its port and API credentials, crash times, and whether a
restart was asked for and not yet done.

Decisions:

- Written atomically (temporary file, fsync, ``os.replace``, folder fsync) with mode 0600: it holds
  the bots' API passwords. Every change is written through at once; the file is small.
- Secrets are ``SecretStr`` in memory (a repr or a log line shows ``**********``) and are written in
  clear only by :meth:`StateFile.save`.
- A missing file is an empty state. An unreadable one (not JSON, wrong shape, a record that doesn't
  validate) is set aside as ``<name>.corrupt-<timestamp>`` (nothing is lost for a person to look at),
  logged, and the gateway starts from the records that did validate. Bots whose record was lost are
  found by :func:`trading_gateway.bots.adoption.find_orphans`.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, SerializationInfo, ValidationError, field_serializer

from shared.files import atomic_write
from shared.logging import get_logger
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import DIR_MODE

log = get_logger(__name__)

STATE_VERSION = 1
REVEAL = {"reveal_secrets": True}


class Desired(StrEnum):
    running = "running"
    paused = "paused"
    stopped = "stopped"
    halted = "halted"  # stopped by an emergency stop; only a new start leaves it


class BotRecord(BaseModel):
    """What the gateway remembers about one bot (process fields are None while it has no process)."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    bot_id: str = Field(min_length=1, max_length=64)
    generation: int = Field(default=0, ge=0)
    desired: Desired = Desired.stopped
    config_path: str = Field(description="Absolute path of the bot's config.json; its process's cmdline has it.")
    pid: int | None = Field(default=None, ge=1)
    create_time: float | None = Field(default=None, description="The process's start time (psutil), epoch seconds.")
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    ws_token: SecretStr | None = None
    started_at: datetime | None = None
    freqtrade_version: str | None = None
    launcher: Literal["exec", "fork"] | None = Field(
        default=None, description="How its process started: exec'd, or forked by the gateway's launcher."
    )
    crash_times: list[datetime] = Field(default_factory=list)
    last_exit_code: int | None = None
    last_error: str | None = Field(default=None, max_length=2000)
    restart_pending: bool = Field(
        default=False,
        description="A restart was asked for (RESTART_BOT, a new spec) and its process not yet replaced: a gateway "
        "that adopts the process restarts it. Cleared once the process is gone.",
    )

    @field_serializer("password", "jwt_secret", "ws_token")
    def _reveal_for_the_file(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        if value is None:
            return None
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal_secrets") else "**********"

    @property
    def has_process(self) -> bool:
        return self.pid is not None and self.create_time is not None

    def credentials(self) -> ApiCredentials | None:
        if self.username is None or self.password is None or self.jwt_secret is None:
            return None
        return ApiCredentials(
            username=self.username,
            password=self.password.get_secret_value(),
            jwt_secret=self.jwt_secret.get_secret_value(),
            ws_token="" if self.ws_token is None else self.ws_token.get_secret_value(),
        )

    def with_process(
        self,
        *,
        pid: int,
        create_time: float,
        port: int,
        credentials: ApiCredentials,
        started_at: datetime,
        freqtrade_version: str | None,
        launcher: Literal["exec", "fork"] = "exec",
    ) -> BotRecord:
        return self.model_copy(
            update={
                "pid": pid,
                "create_time": create_time,
                "port": port,
                "username": credentials.username,
                "password": SecretStr(credentials.password),
                "jwt_secret": SecretStr(credentials.jwt_secret),
                "ws_token": SecretStr(credentials.ws_token),
                "started_at": started_at,
                "freqtrade_version": freqtrade_version,
                "launcher": launcher,
                "last_error": None,
            }
        )

    def without_process(
        self, *, exit_code: int | None = None, error: str | None = None, crashed: bool = False
    ) -> BotRecord:
        """The record once its process is gone (credentials dropped: the next spawn gets new ones)."""
        update: dict[str, Any] = {
            "pid": None,
            "create_time": None,
            "port": None,
            "username": None,
            "password": None,
            "jwt_secret": None,
            "ws_token": None,
            "launcher": None,
            "last_exit_code": exit_code,
            "restart_pending": False,  # the next process starts from the newest spec: a pending restart is done
        }
        if error is not None:
            update["last_error"] = error[:2000]
        if crashed:
            update["crash_times"] = [*self.crash_times, datetime.now(UTC)]
        return self.model_copy(update=update)


class StateFile:
    """The records of one gateway's bots, loaded once and written through on every change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()
        self._records: dict[str, BotRecord] = {}
        self._lock = threading.Lock()
        self.load()

    def load(self) -> dict[str, BotRecord]:
        """(Re)read the file; tolerant of a missing or corrupt one (see the module's docstring)."""
        with self._lock:
            self._records = self._read()
            return dict(self._records)

    def _read(self) -> dict[str, BotRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        problems: list[str] = []
        records: dict[str, BotRecord] = {}
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("bots"), list):
                raise ValueError("not an object with a 'bots' list")
            if doc.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {doc.get('version')!r}")
            for i, item in enumerate(doc["bots"]):
                try:
                    record = BotRecord.model_validate(item)
                except ValidationError as exc:
                    problems.append(f"record {i}: {exc.error_count()} invalid fields")
                    continue
                if record.bot_id in records:
                    problems.append(f"record {i}: bot {record.bot_id} listed twice")
                    continue
                records[record.bot_id] = record
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            problems.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        if problems:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
            self.path.replace(aside)
            log.error(
                "gateway state file is corrupt; set aside",
                path=str(self.path),
                set_aside_as=str(aside),
                problems=problems[:10],
                records_kept=len(records),
            )
            self._records = records
            self._write()
        return records

    def _write(self) -> None:
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        doc = {
            "version": STATE_VERSION,
            "bots": [r.model_dump(mode="json", context=REVEAL) for r in self._records.values()],
        }
        atomic_write(self.path, json.dumps(doc, indent=1).encode())

    def save(self) -> None:
        with self._lock:
            self._write()

    def records(self) -> list[BotRecord]:
        with self._lock:
            return list(self._records.values())

    def get(self, bot_id: str) -> BotRecord | None:
        with self._lock:
            return self._records.get(bot_id)

    def put(self, record: BotRecord) -> None:
        """Add or replace ``record`` and write the file."""
        with self._lock:
            self._records[record.bot_id] = record
            self._write()

    def put_many(self, records: list[BotRecord]) -> None:
        """Add or replace every record and write the file once (an emergency stop records all its bots at once)."""
        with self._lock:
            for record in records:
                self._records[record.bot_id] = record
            self._write()

    def remove(self, bot_id: str) -> None:
        """Forget a bot (nothing happens when it is unknown) and write the file."""
        with self._lock:
            if self._records.pop(bot_id, None) is not None:
                self._write()
