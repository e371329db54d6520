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

    @field_validator("database_url", mode="after")
    @classmethod
    def _asyncpg_driver(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalize_database_url(value.get_secret_value()))


@lru_cache
def get_settings() -> ManagementSettings:
    """Settings read once per process from the environment."""
    return ManagementSettings()
