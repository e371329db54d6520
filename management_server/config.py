"""Settings of the management server and its Celery worker."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, EmailStr, Field, SecretStr, field_validator

from shared.settings import CommonSettings

DEFAULT_DATABASE_URL = "postgresql+asyncpg://freqfleet@127.0.0.1:5432/freqfleet"


def normalize_database_url(url: str) -> str:
    """Accept the usual ``postgres://`` / ``postgresql://`` forms and use the asyncpg driver."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


class ManagementSettings(CommonSettings):
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        validation_alias=AliasChoices("FREQFLEET_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL (the embedded server's when unset under `freqfleet up`).",
    )
    database_pool_size: int = Field(default=10, ge=1, description="SQLAlchemy pool size per process.")
    management_host: str = Field(default="127.0.0.1", description="Address the management server binds.")
    management_port: int = Field(default=8000, ge=1, le=65535, description="Port of the management server.")
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
