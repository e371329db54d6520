"""The envelope and its payloads: round trips, strictness, secrets, exported schemas."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from shared.bus import schema_export
from shared.bus.messages import (
    COMMAND_TYPES,
    EVENT_TYPES,
    MESSAGE_TYPES,
    BotSpec,
    ExchangeCredentials,
    ForceExit,
    ForceExitData,
    ModelBundle,
    StartBot,
    StartBotData,
    UndecodableMessage,
    decode,
    encode,
)
from shared.sealing import SealError, open_credentials, seal_credentials

STRATEGY = "class S(IStrategy):\n    INTERFACE_VERSION = 3\n"


def spec(**changes: object) -> BotSpec:
    values: dict[str, object] = {
        "name": "bot-1",
        "strategy_class": "S",
        "strategy_source": STRATEGY,
        "pairs": ["BTC/USDT", "ETH/USDT"],
        "timeframe": "5m",
        "stake_currency": "USDT",
        "stake_amount": Decimal("25"),
        "max_open_trades": 3,
    } | changes
    return BotSpec.model_validate(values)


def test_the_bus_has_every_type_the_design_names() -> None:
    assert {t.model_fields["type"].default for t in COMMAND_TYPES} == {
        "START_BOT", "STOP_BOT", "RESTART_BOT", "PAUSE_BOT", "RESUME_BOT", "FORCE_EXIT",
        "UPDATE_CONFIG", "UPDATE_MODEL", "ROLLBACK_MODEL", "MIGRATE_TRADE_DB", "EMERGENCY_STOP",
    }  # fmt: skip
    assert {t.model_fields["type"].default for t in EVENT_TYPES} == {
        "COMMAND_ACCEPTED", "COMMAND_REJECTED", "BOT_STARTED", "BOT_STOPPED", "BOT_FAILED", "BOT_STATUS",
        "TRADE_OPENED", "TRADE_CLOSED", "MODEL_LOADED", "MODEL_REJECTED", "EMERGENCY_STOP_COMPLETED",
        "GATEWAY_HEARTBEAT", "MCP_CALL",
    }  # fmt: skip
    assert len(MESSAGE_TYPES) == 24


def test_start_bot_round_trips_with_its_model() -> None:
    model = ModelBundle(
        model_id=uuid.uuid4(),
        version=1,
        filename="LightGBMRegressor_model.zst",
        sha256="a" * 64,
        size=1234,
        signature="c2lnbmF0dXJl",
        content_b64="U29tZUJpZ0Jhc2U2NENvbnRlbnQ=",
    )
    message = StartBot(
        source="management",
        correlation_id="req-1",
        data=StartBotData(bot_id=uuid.uuid4(), generation=4, spec=spec(freqai={"identifier": "x"}), freqai_model=model),
    )
    decoded = decode(encode(message))
    assert decoded == message
    assert isinstance(decoded, StartBot)
    assert decoded.data.spec.stake_amount == Decimal("25")
    assert decoded.occurred_at.tzinfo is not None


def test_live_bot_credentials_travel_sealed_to_one_gateway_for_one_bot() -> None:
    creds = ExchangeCredentials(key="api-key-123", secret="api-secret-456", password="pass-789")
    bot_id = uuid.uuid4()
    gateway = X25519PrivateKey.generate()
    public = base64.b64encode(gateway.public_key().public_bytes_raw()).decode()
    sealed = seal_credentials(public, "gw-a", bot_id, "cred:1", creds)
    message = StartBot(
        source="management",
        data=StartBotData(bot_id=bot_id, generation=1, spec=spec(dry_run=False, credentials=sealed)),
    )
    wire = encode(message)
    for secret in ("api-key-123", "api-secret-456", "pass-789"):
        assert secret not in wire
        assert secret not in repr(message)
    decoded = decode(wire)
    assert isinstance(decoded, StartBot)
    received = decoded.data.spec.credentials
    assert received is not None
    opened = open_credentials(gateway, received, "gw-a", bot_id)
    assert (opened.key.get_secret_value(), opened.secret.get_secret_value()) == ("api-key-123", "api-secret-456")
    # Another gateway's key, another bot, another revision, a changed byte: never opened.
    with pytest.raises(SealError, match="does not open"):
        open_credentials(X25519PrivateKey.generate(), received, "gw-a", bot_id)
    with pytest.raises(SealError, match="not for gateway gw-b"):
        open_credentials(gateway, received, "gw-b", bot_id)
    with pytest.raises(SealError, match="not for gateway gw-a and bot"):
        open_credentials(gateway, received, "gw-a", uuid.uuid4())
    with pytest.raises(SealError, match="does not open"):
        open_credentials(gateway, received.model_copy(update={"revision": "cred:2"}), "gw-a", bot_id)
    flipped = base64.b64decode(received.ciphertext)
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    with pytest.raises(SealError, match="does not open"):
        open_credentials(
            gateway, received.model_copy(update={"ciphertext": base64.b64encode(flipped).decode()}), "gw-a", bot_id
        )
    # Sealed again (new ephemeral key, other bytes): the same credentials, so the same spec.
    again = seal_credentials(public, "gw-a", bot_id, "cred:1", creds)
    assert again.ciphertext != sealed.ciphertext
    assert spec(dry_run=False, credentials=again) == spec(dry_run=False, credentials=sealed)
    assert spec(dry_run=False, credentials=again.model_copy(update={"revision": "cred:2"})) != spec(
        dry_run=False, credentials=sealed
    )


def test_a_live_bot_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs exchange credentials"):
        spec(dry_run=False)


def test_model_bundle_is_inline_or_chunked_never_both() -> None:
    common = {"model_id": uuid.uuid4(), "version": 1, "filename": "m.zst", "sha256": "b" * 64, "size": 9}
    with pytest.raises(ValidationError, match="either inline"):
        ModelBundle.model_validate(common | {"signature": "s"})
    with pytest.raises(ValidationError, match="either inline"):
        ModelBundle.model_validate(
            common | {"signature": "s", "content_b64": "eA==", "transfer_id": uuid.uuid4(), "chunk_count": 2}
        )
    ModelBundle.model_validate(common | {"signature": "s", "transfer_id": uuid.uuid4(), "chunk_count": 2})


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m | {"surprise": 1}, "invalid FORCE_EXIT: surprise: Extra inputs are not permitted"),
        (lambda m: m | {"type": "FORCE_EXIT_NOW"}, "unknown message type 'FORCE_EXIT_NOW'"),
        (lambda m: m | {"schema_version": 2}, "unsupported schema_version 2 for FORCE_EXIT"),
        (lambda m: m | {"occurred_at": "2026-01-01T00:00:00"}, "invalid FORCE_EXIT: occurred_at: Input should have"),
        (lambda m: {**m, "data": {**m["data"], "trade_id": "some"}}, "invalid FORCE_EXIT: data.trade_id"),
    ],
)  # fmt: skip
def test_decode_says_what_is_wrong(mutate: object, reason: str) -> None:
    message = ForceExit(source="management", data=ForceExitData(bot_id=uuid.uuid4(), generation=1, trade_id="all"))
    raw = mutate(message.model_dump(mode="json"))  # type: ignore[operator]
    with pytest.raises(UndecodableMessage) as excinfo:
        decode(json.dumps(raw))
    assert str(excinfo.value).startswith(reason)


def test_exported_schemas_match_the_code() -> None:
    on_disk = {p.name: p.read_text() for p in schema_export.DEFAULT_DIR.glob("*.json")}
    expected = schema_export.render()
    assert sorted(on_disk) == sorted(expected), "run: python -m shared.bus.schema_export"
    for name, content in expected.items():
        assert on_disk[name] == content, f"docs/events/{name} is out of date: run python -m shared.bus.schema_export"


def test_exported_schema_validates_a_real_message() -> None:
    import jsonschema

    schema = json.loads((schema_export.DEFAULT_DIR / "FORCE_EXIT.json").read_text())
    message = ForceExit(
        source="management",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        data=ForceExitData(bot_id=uuid.uuid4(), generation=1, trade_id=7),
    )
    jsonschema.validate(json.loads(encode(message)), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(encode(message)) | {"extra": True}, schema)
