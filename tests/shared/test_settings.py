"""Settings: environment names, the asyncpg driver, and no placeholder secrets in production."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from management_server.config import ManagementSettings
from shared.settings import Environment, redact_url
from trading_gateway.config import GatewaySettings


def test_unprefixed_database_and_redis_urls_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw@db.internal:5432/fleet")
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6379/1")
    settings = ManagementSettings()
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://app:pw@db.internal:5432/fleet"
    assert settings.redis_url.get_secret_value() == "redis://cache.internal:6379/1"


def test_prefixed_settings_and_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREQFLEET_MANAGEMENT_PORT", "9100")
    monkeypatch.setenv("FREQFLEET_GATEWAY_PORT", "9101")
    monkeypatch.setenv("FREQFLEET_GATEWAY_ID", "gw-east-1")
    assert ManagementSettings().management_port == 9100
    gateway = GatewaySettings()
    assert gateway.gateway_port == 9101
    assert gateway.gateway_data_dir.parts[-2:] == ("gateway", "gw-east-1")


def test_secrets_never_show_in_repr() -> None:
    settings = ManagementSettings(database_url=SecretStr("postgresql://app:hunter2hunter2@db/fleet"))
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("database_url", "postgresql://app:changeme@db/fleet", "DATABASE_URL carries a placeholder password"),
        ("redis_url", "redis://:password@cache:6379/0", "REDIS_URL carries a placeholder password"),
        ("admin_password", "changeme", "FREQFLEET_ADMIN_PASSWORD is empty or a placeholder"),
    ],
)
def test_production_refuses_placeholder_secrets(field: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ManagementSettings(env=Environment.production, **{field: SecretStr(value)})


def test_development_accepts_the_defaults_and_production_real_secrets() -> None:
    ManagementSettings(env=Environment.development, admin_password=SecretStr("changeme"))
    ManagementSettings(
        env=Environment.production,
        database_url=SecretStr("postgresql://app:N0t-a-placeholder-9@db/fleet"),
        admin_password=SecretStr("a long real passphrase"),
    )


def test_gateway_id_is_validated() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(gateway_id="../escape")


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
