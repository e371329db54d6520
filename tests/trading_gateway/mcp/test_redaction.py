"""What ``get_logs`` and the audit rows keep of secrets: nothing."""

from __future__ import annotations

from trading_gateway.fleet.logs import redact_line
from trading_gateway.mcp.audit import MAX_ARGUMENTS_JSON, audited_arguments

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ"


def test_log_lines_lose_the_bots_secrets_and_anything_that_looks_like_one() -> None:
    lines = {
        "2026-11-30 12:00:00 - api - INFO - login with hunter2-bot-password ok": "hunter2-bot-password",
        f"2026-11-30 12:00:00 - x - INFO - Authorization: Bearer {JWT}": JWT,
        "exchange config: {'key': 'AKIA12345678', 'secret': 'S3cr3tValue'}": "S3cr3tValue",
        'api_server {"password": "pw-in-json", "jwt_secret_key": "jwt-in-json"}': "pw-in-json",
        "connecting to postgresql://freqtrade:dbpass@db:5432/trades": "dbpass",
        "ws_token=abcdef123456 sent": "abcdef123456",
    }
    for line, secret in lines.items():
        redacted = redact_line(line, ["hunter2-bot-password"])
        assert secret not in redacted, redacted
        assert "***" in redacted
    assert "AKIA12345678" not in redact_line("exchange config: {'key': 'AKIA12345678'}", [])
    plain = "2026-11-30 12:00:00 - freqtrade.worker - INFO - Bot heartbeat. PID=123, version='2026.9', state='RUNNING'"
    assert redact_line(plain, []) == plain


def test_audited_arguments_are_masked_cut_and_bounded() -> None:
    assert audited_arguments({"bot_id": "b", "token": "secret-token", "nested": {"api_key": "k"}}) == {
        "bot_id": "b",
        "token": "***",
        "nested": {"api_key": "***"},
    }
    assert audited_arguments({"reason": "x" * 600})["reason"] == "x" * 500 + "..."
    huge = audited_arguments({f"k{i}": "v" * 400 for i in range(40)})
    assert huge["_truncated"] is True
    assert huge["_size"] > MAX_ARGUMENTS_JSON
    assert audited_arguments(None) == {}
    assert audited_arguments(["not", "an", "object"]) == {"_not_an_object": "list"}
