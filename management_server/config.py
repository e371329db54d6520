"""Settings of the management server and its Celery worker."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, EmailStr, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings

DEFAULT_DATABASE_URL = "postgresql+asyncpg://freqfleet@127.0.0.1:5432/freqfleet"


def normalize_database_url(url: str) -> str:
    """Accept the usual ``postgres://`` / ``postgresql://`` forms and use the asyncpg driver.

    Several servers (a primary and its standbys) may be named as libpq names them,
    ``postgresql://user:pw@host1:5432,host2:5432/db?target_session_attrs=read-write``, or as SQLAlchemy does,
    ``...@/db?host=host1:5432&host=host2:5432&...``: the first becomes the second. With
    ``target_session_attrs=read-write`` every new connection goes to whichever of them takes writes now (asyncpg
    tries them in turn)."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            url = "postgresql+asyncpg://" + url[len(prefix) :]
            break
    scheme, sep, rest = url.partition("://")
    netloc, _slash, tail = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if not sep or "," not in hosts:
        return url
    database, _, query = tail.partition("?")
    pairs = []
    for host in hosts.split(","):
        _name, colon, port = host.rpartition(":")
        pairs.append(f"host={host}" if colon and port.isdigit() else f"host={host}:5432")
    query = "&".join([*pairs, *([query] if query else [])])
    return f"{scheme}://{credentials}{at}/{database}?{query}"


class ManagementSettings(CommonSettings):
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        validation_alias=AliasChoices("FREQFLEET_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL (the embedded server's when unset under `freqfleet up`).",
    )
    database_pool_size: int = Field(default=10, ge=1, description="SQLAlchemy pool size per process, for requests.")
    database_background_pool_size: int = Field(
        default=4,
        ge=1,
        description="The pool of the background tasks (outbox relay, events consumer, trade sync, reconciler, "
        "metrics): their own, so they never take the requests' connections, nor requests theirs.",
    )
    management_host: str = Field(default="127.0.0.1", description="Address the management server binds.")
    management_port: int = Field(default=8000, ge=1, le=65535, description="Port of the management server.")
    management_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes serving the management server on its port (uvicorn workers); `freqfleet up` uses "
        "one per core unless set. Background work stays correct with any number (docs/design.md).",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies in front of the management server, comma-"
        "separated or a JSON list: from them X-Forwarded-For names the client (audit, per-address throttles). "
        "None by default: the peer is the client.",
    )
    admin_email: EmailStr | None = Field(default=None, description="First admin's email, created at start.")
    admin_password: SecretStr | None = Field(
        default=None, description="First admin's password; generated and printed once when unset."
    )
    argon2_time_cost: int = Field(default=2, ge=2, description="argon2id iterations (OWASP minimum 2).")
    argon2_memory_cost_kib: int = Field(default=19456, ge=19456, description="argon2id memory in KiB (>= 19 MiB).")
    argon2_parallelism: int = Field(default=1, ge=1, description="argon2id lanes.")
    celery_concurrency: int = Field(default=2, ge=1, description="Celery worker processes.")
    # rate limits
    rate_limit_enabled: bool = Field(
        default=True, description="Turn the per-IP and per-user request rate limits on or off (not the login throttle)."
    )
    rate_limit_per_ip: str = Field(
        default="300/minute", description="Requests one client IP may make, e.g. `300/minute` or `20 per 10 seconds`."
    )
    rate_limit_per_user: str = Field(
        default="600/minute", description="Requests one signed-in user may make, from any IP, e.g. `600/minute`."
    )
    login_max_failures_per_account_ip: int = Field(
        default=5, ge=1, description="Failed logins to one account from one IP before each further try must wait."
    )
    login_max_failures_per_ip: int = Field(
        default=50, ge=1, description="Failed logins from one IP in an hour, over all accounts, before it must wait."
    )
    login_account_soft_limit: int = Field(
        default=20,
        ge=1,
        description="Failed logins to one account in an hour, from any IP, before IPs that have not signed in to it "
        "in the last 30 days must wait too (IPs it signed in from recently never do).",
    )
    login_max_delay_seconds: int = Field(
        default=900, ge=1, description="Longest wait between login tries; the wait doubles with each failure up to it."
    )

    @model_validator(mode="after")
    def _bot_db_needs_a_server(self) -> ManagementSettings:
        if self.bot_db == "postgres" and self.bot_db_admin_url is None:
            raise ValueError(
                "FREQFLEET_BOT_DB=postgres needs FREQFLEET_BOT_DB_ADMIN_URL: a PostgreSQL role with CREATEDB and "
                "CREATEROLE that makes each bot's database (freqfleet up sets it on its embedded server)"
            )
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            proxies = [item.strip() if isinstance(item, str) else item for item in value]
            for item in proxies:
                try:
                    ipaddress.ip_network(item, strict=False)
                except (TypeError, ValueError):
                    raise ValueError(f"not an address or a network: {item!r}") from None
            return [item for item in proxies if item != ""]
        return value

    @field_validator("rate_limit_per_ip", "rate_limit_per_user")
    @classmethod
    def _rate_limit_string(cls, value: str) -> str:
        from limits import parse

        parse(value)  # raises ValueError on a string it can't read
        return value

    # identity
    jwt_issuer: str = Field(default="freqfleet", description="`iss` of the tokens the management server signs.")
    jwt_audience: str = Field(default="freqfleet", description="`aud` of those tokens; verifiers check it.")
    jwt_private_keys: SecretStr | None = Field(
        default=None,
        description="Ed25519 signing keys as PEM (several: the last signs, all verify); "
        "default: keys generated into <data dir>/keys.",
    )
    access_token_minutes: int = Field(default=15, ge=1, le=60, description="Lifetime of an access token.")
    refresh_token_days: int = Field(default=7, ge=1, le=90, description="Lifetime of one refresh token.")
    refresh_family_days: int = Field(
        default=30, ge=1, le=365, description="Absolute lifetime of a login's chain of refresh tokens."
    )
    pat_max_days: int = Field(default=365, ge=1, le=3650, description="Longest lifetime of a personal access token.")
    open_registration: bool | None = Field(
        default=None, description="Anyone may register (default: on in development, off in production)."
    )

    # strategies, credentials, bots
    master_keys: SecretStr | None = Field(
        default=None,
        description="AES-256 keys that encrypt exchange credentials (and models) at rest: `kid:base64` pairs, "
        "comma-separated, the last encrypts; default: generated into <data dir>/master.keys.",
    )
    bot_db: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="Where a new bot's trades live: `sqlite`, a file in its folder on its gateway (one host), or "
        "`postgres`, a database and role of its own on FREQFLEET_BOT_DB_ADMIN_URL's server, reachable from every "
        "gateway (what failover needs). `freqfleet up` uses `postgres` on its embedded server.",
    )
    bot_db_admin_url: SecretStr | None = Field(
        default=None,
        description="With FREQFLEET_BOT_DB=postgres: a PostgreSQL role with CREATEDB and CREATEROLE (not a "
        "superuser) that makes and drops the bots' databases and roles, e.g. "
        "`postgresql://freqfleet_provisioner:...@db.internal:5432/postgres`. `up` sets it on its embedded server.",
    )
    bot_db_host: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\-\[\]:]{1,255}$",
        description="host:port of that server as the gateways see it (default: FREQFLEET_BOT_DB_ADMIN_URL's).",
    )
    emergency_wait_seconds: float = Field(
        default=10.0, ge=0, le=60, description="How long an emergency stop request waits for the gateways' reports."
    )
    strategy_review: bool = Field(
        default=True, description="A non-admin's strategy waits for an admin's approval before it can run."
    )
    # Not named `simulator_url`: StackSettings inherits this and SimulatorSettings, whose property of that name
    # (the URL of the simulator `up` starts) would shadow the field.
    check_simulator_url: str = Field(
        default="http://127.0.0.1:8002",
        validation_alias=AliasChoices("FREQFLEET_SIMULATOR_URL"),
        description="The exchange simulator the worker's strategy checks backtest against (`freqfleet up` sets it).",
    )

    # analytics and the risk guard (management_server/analytics)
    analytics_cache_seconds: float = Field(
        default=300.0,
        ge=1,
        description="Longest life of a cached analytics answer; a new trade makes the answers it changes stale "
        "at once.",
    )
    reconcile_interval: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between reconcile passes: each bot's desired state against its gateway's inventory.",
    )
    reconcile_grace: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a command has to show in its gateway's inventory before the reconciler sends it again.",
    )
    reconcile_stale_after: float = Field(
        default=30.0,
        gt=0,
        description="Seconds without a heartbeat after which a gateway's bots read `unknown`, not what they last said.",
    )
    reconcile_lost_after: float = Field(
        default=300.0,
        gt=0,
        description="Seconds without a heartbeat after which a gateway's bots read `lost`.",
    )
    command_answer_within: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a command waits for its gateway's answer (COMMAND_ACCEPTED or COMMAND_REJECTED) before "
        "it is published again with the same id (twice as long the next time, at most 5 minutes apart, until "
        "FREQFLEET_COMMAND_MAX_AGE): a command Redis lost is carried out anyway, once.",
    )
    failover_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between checks of the gateways' leases (bots/failover.py): a running bot whose lease has "
        "ended is started on a live gateway, with its trades (PostgreSQL) and the next generation.",
    )
    trade_sync_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between checks for trades a bot has closed that the management server never heard of "
        "(a missed event); those are read from the bot's gateway.",
    )
    risk_max_drawdown_bot: float | None = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A bot whose drawdown (closed trades, from its high-water mark) reaches this share of its balance "
        "is paused; a bot's own max_drawdown_ratio overrides it. Empty: no limit.",
    )
    risk_max_drawdown_user: float | None = Field(
        default=0.5,
        gt=0,
        le=1,
        description="When the drawdown of all of a user's bots together reaches this share, all of them are paused. "
        "Empty: no limit.",
    )

    @field_validator("risk_max_drawdown_bot", "risk_max_drawdown_user", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none", "off") else value

    # FreqAI models (management_server/freqai)
    model_store_dir: Path | None = Field(
        default=None,
        description="Where the model registry keeps its bundles, encrypted (AES-256-GCM under the master keys); the "
        "management server and the workers must share it. Default: <data dir>/model-store.",
    )
    command_signing_keys: SecretStr | None = Field(
        default=None,
        description="Ed25519 keys that sign every bus command for the gateways, as PEM (several: the last signs, all "
        "are published at /.well-known/command-keys.json); default: generated into <data dir>/command-signing-keys.",
    )
    model_signing_keys: SecretStr | None = Field(
        default=None,
        description="Ed25519 keys that sign model bundles for the gateways, as PEM (several: the last signs, all are "
        "published at /.well-known/model-keys.json); default: generated into <data dir>/model-signing-keys.",
    )
    model_max_bundle_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="Largest model bundle (uncompressed) the registry takes, trained or uploaded.",
    )
    model_max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Largest upload of an externally trained bundle (as sent)."
    )
    model_inline_max_bytes: int = Field(
        default=512 * 1024,
        ge=0,
        description="Compressed bundles up to this size travel inside the bus message (Base64); larger ones in "
        "1 MiB chunks stored in Redis for a day.",
    )
    model_training_timeout: float = Field(
        default=1800.0, gt=0, description="Seconds a training (candle download and training) may take."
    )
    model_training_max_active: int = Field(
        default=2, ge=1, description="Trainings one user may have queued or running at once."
    )

    # backups (management_server/backups)
    backup_dir: Path | None = Field(
        default=None,
        description="Where `freqfleet backup` and the scheduled backups write archives (<data dir>/backups).",
    )
    backup_keep: int = Field(default=7, ge=1, description="Scheduled backups keep this many newest archives.")
    backup_interval_hours: float = Field(
        default=24.0, ge=0, description="Hours between scheduled backups (Celery beat); 0: none."
    )
    backup_paths: Annotated[list[Path] | None, NoDecode] = Field(
        default=None,
        description="Files and folders backed up beside the database, comma-separated, relative to the data dir or "
        "absolute (default: the model store, model-signing-keys, command-signing-keys, keys and master.keys).",
    )
    backup_key: SecretStr | None = Field(
        default=None,
        description="The passphrase archives are encrypted with (else FREQFLEET_BACKUP_KEY_FILE, else "
        "<data dir>/backup.key, made at the first backup). Keep it outside the host: a restore needs it.",
    )
    backup_key_file: Path | None = Field(
        default=None, description="A file holding the backup key (its first line), instead of FREQFLEET_BACKUP_KEY."
    )
    worker_beat: bool = Field(
        default=False,
        description="This worker also runs Celery beat, the scheduler of periodic tasks (scheduled backups); run it "
        "on one worker only (`freqfleet up` sets it on its worker).",
    )

    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of the worker's Prometheus /metrics (training durations, backups); none when unset "
        "(`freqfleet up` sets 8003).",
    )
    worker_metrics_host: str = Field(default="127.0.0.1", description="Address the worker's /metrics binds.")

    @field_validator("backup_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return parts or None
        return value

    @property
    def backups(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    def backup_sources(self) -> list[Path]:
        """What is backed up beside the database."""
        if self.backup_paths:
            return list(self.backup_paths)
        return [
            self.model_store.resolve(),
            Path("model-signing-keys"),
            Path("command-signing-keys"),
            Path("keys"),
            Path("master.keys"),
        ]

    @property
    def default_backup_key_file(self) -> Path:
        return self.data_dir / "backup.key"

    def backup_passphrase(self, *, create: bool) -> bytes | None:
        """The backup key: FREQFLEET_BACKUP_KEY, FREQFLEET_BACKUP_KEY_FILE's first line, or <data dir>/backup.key
        (made when ``create``); None when there is none."""
        if self.backup_key is not None:
            return self.backup_key.get_secret_value().encode()
        path = self.backup_key_file or self.default_backup_key_file
        try:
            line = path.read_text().splitlines()[0].strip() if path.stat().st_size else ""
        except FileNotFoundError:
            if not create or self.backup_key_file is not None:
                return None
            from management_server.backups.sealing import new_key_file

            return new_key_file(path)
        return line.encode() or None

    @property
    def model_store(self) -> Path:
        return self.model_store_dir or self.data_dir / "model-store"

    @property
    def registration_open(self) -> bool:
        return self.is_development if self.open_registration is None else self.open_registration

    @field_validator("database_url", mode="after")
    @classmethod
    def _asyncpg_driver(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalize_database_url(value.get_secret_value()))


@lru_cache
def get_settings() -> ManagementSettings:
    """Settings read once per process from the environment."""
    return ManagementSettings()
