"""Settings common to every Freqfleet process.

Values come from the environment with the ``FREQFLEET_`` prefix (``DATABASE_URL`` and
``REDIS_URL`` are also read without it, as most hosting platforms set them that way).
Secrets are ``SecretStr`` so they never show in a repr or a log line, and outside
development a secret that is empty or an obvious placeholder is refused at start.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.body_limit import DEFAULT_MAX_BODY_BYTES
from shared.bus.streams import DEFAULT_EVENTS_MAX_AGE, Retention
from shared.sandbox.policy import (
    DEFAULT_FILE_SIZE_MB,
    DEFAULT_MEMORY_MB,
    DEFAULT_NICE,
    DEFAULT_OPEN_FILES,
    DEFAULT_PROCESSES,
    Limits,
)

PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "password",
        "admin",
        "postgres",
        "redis",
        "example",
        "placeholder",
        "xxx",
        "todo",
    }
)


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class LogFormat(StrEnum):
    json = "json"
    console = "console"


def is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDER_SECRETS


def url_password(url: str) -> str | None:
    """The password part of a URL, or None when the URL carries none."""
    return urlsplit(url).password


def redact_url(url: str) -> str:
    """The URL with its password replaced, safe for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


EnvRedisUrl = Annotated[
    SecretStr,
    Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        validation_alias=AliasChoices("FREQFLEET_REDIS_URL", "REDIS_URL"),
        description="Redis (or Valkey) URL for the bus, the Celery broker, caches and rate limits.",
    ),
]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FREQFLEET_",
        env_file=None,
        extra="ignore",
        populate_by_name=True,
    )

    env: Environment = Field(default=Environment.development, description="development, test or production.")
    data_dir: Path = Field(default=Path(".freqfleet"), description="Where all state of the embedded default lives.")
    log_level: str = Field(default="INFO", description="Log level of every Freqfleet process.")
    log_format: LogFormat = Field(default=LogFormat.json, description="json (default) or console.")
    redis_url: EnvRedisUrl
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS), as a JSON list or comma-separated; "
        "none when empty.",
    )

    command_max_age: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a signed command stays valid: a gateway refuses an older one (it waited that long, or "
        "it is a replay), and the management server trims command streams to this age.",
    )
    events_max_age: float = Field(
        default=DEFAULT_EVENTS_MAX_AGE,
        ge=300,
        description="Seconds an event waits on freqfleet:events for the management server: older ones are trimmed "
        "(the stream is bounded by time, so no burst can push out an event not yet consumed). Consumed events are "
        "trimmed a few minutes after they were applied.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="Largest request body the HTTP APIs read (413 above it); the model upload has its own limit.",
    )
    sandbox_uid_base: int = Field(
        default=610000,
        ge=1000,
        le=2**31 - 100_000,
        description="First uid of the sandboxed processes when the services run as root (bots get base+1000+n).",
    )
    sandbox_memory_mb: int = Field(
        default=DEFAULT_MEMORY_MB, ge=256, description="Private memory a sandboxed process may use (RLIMIT_DATA)."
    )
    sandbox_file_size_mb: int = Field(
        default=DEFAULT_FILE_SIZE_MB, ge=16, description="Largest file a sandboxed process may write (RLIMIT_FSIZE)."
    )
    sandbox_open_files: int = Field(
        default=DEFAULT_OPEN_FILES, ge=256, description="Open files of a sandboxed process (RLIMIT_NOFILE)."
    )
    sandbox_processes: int = Field(
        default=DEFAULT_PROCESSES,
        ge=64,
        description="Processes and threads of a sandboxed uid (RLIMIT_NPROC; only with an uid per process).",
    )
    sandbox_nice: int = Field(
        default=DEFAULT_NICE,
        ge=0,
        le=19,
        description="CPU priority of sandboxed processes (bots, trainings, checks): their nice, and their session's "
        "(0: as the services; 19: last). The services run at 0, so a busy fleet does not starve them.",
    )
    allow_unsandboxed: bool = Field(
        default=False,
        description="Run plain users' strategies even where the host has no sandbox (no Landlock): unsafe.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept ``'["https://a.example"]'`` (JSON) or ``'https://a.example, https://b.example'``; browsers send
        an origin without a trailing slash, so one given with it is trimmed."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            # Anything but a string is left for pydantic to refuse.
            cleaned = [origin.strip().rstrip("/") if isinstance(origin, str) else origin for origin in value]
            return [origin for origin in cleaned if origin != ""]
        return value

    @property
    def sandbox_limits(self) -> Limits:
        return Limits(
            memory_mb=self.sandbox_memory_mb,
            file_size_mb=self.sandbox_file_size_mb,
            open_files=self.sandbox_open_files,
            processes=self.sandbox_processes,
            nice=self.sandbox_nice,
        )

    @property
    def stream_retention(self) -> Retention:
        return Retention(command_max_age=self.command_max_age, events_max_age=self.events_max_age)

    @property
    def is_development(self) -> bool:
        return self.env is not Environment.production

    def secret_fields(self) -> dict[str, SecretStr]:
        """Every SecretStr setting by name, subclasses' included."""
        return {name: value for name in type(self).model_fields if isinstance(value := getattr(self, name), SecretStr)}

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> CommonSettings:
        if self.env is not Environment.production:
            return self
        problems: list[str] = []
        for name, secret in self.secret_fields().items():
            value = secret.get_secret_value()
            if "://" in value:
                password = url_password(value)
                if password is not None and is_placeholder(password):
                    problems.append(f"{name.upper()} carries a placeholder password")
            elif is_placeholder(value):
                problems.append(f"FREQFLEET_{name.upper()} is empty or a placeholder")
        if problems:
            raise ValueError(
                "refusing to start in production with placeholder secrets: "
                + "; ".join(problems)
                + ". Set real values in the environment."
            )
        return self
