"""JSON log lines from a real process: correlation id bound, secrets masked, libraries included."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(code: str) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def test_structlog_and_stdlib_lines_are_json_with_correlation_id_and_no_secrets() -> None:
    lines = _run(
        """
        import logging
        from asgi_correlation_id import correlation_id
        from shared.logging import configure_logging, get_logger
        from shared.settings import LogFormat

        configure_logging("gateway", "INFO", LogFormat.json)
        correlation_id.set("req-123")
        get_logger("freqfleet.test").info(
            "bot started", bot_id=7, api_password="pw-should-not-show",
            config={"exchange": {"key": "k", "secret": "s-should-not-show"}},
        )
        logging.getLogger("some.library").warning("library says %s", "hello")
        get_logger("freqfleet.test").debug("below the level")
        """
    )
    assert len(lines) == 2
    ours, library = lines
    assert ours["event"] == "bot started"
    assert ours["correlation_id"] == "req-123"
    assert ours["service"] == "gateway"
    assert ours["level"] == "info"
    assert ours["bot_id"] == 7
    assert ours["api_password"] == "***"
    assert ours["config"] == {"exchange": {"key": "k", "secret": "***"}}
    assert "should-not-show" not in json.dumps(lines)
    assert library["event"] == "library says hello"
    assert library["logger"] == "some.library"
    assert library["correlation_id"] == "req-123"
    assert "timestamp" in library


def test_values_json_cannot_hold_are_written_not_dropped_and_secrets_in_lists_are_masked() -> None:
    lines = _run(
        """
        import datetime, decimal, uuid
        from shared.logging import configure_logging, get_logger
        from shared.settings import LogFormat

        configure_logging("management", "INFO", LogFormat.json)
        get_logger("freqfleet.test").info(
            "odd values",
            when=datetime.datetime(2026, 12, 5, 9, 0, tzinfo=datetime.timezone.utc),
            bot_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
            amount=decimal.Decimal("1.5"),
            thing=object(),
            by_number={1: "one"},
            accounts=[{"name": "a", "Password": "p-should-not-show"}, ("x", {"api_key": "k-should-not-show"})],
        )
        """
    )
    (line,) = lines
    assert line["when"] == "2026-12-05T09:00:00+00:00"
    assert line["bot_id"] == "12345678-1234-5678-1234-567812345678"
    assert line["amount"] == "Decimal('1.5')"  # structlog's fallback: the value's repr
    assert str(line["thing"]).startswith("<object object at")
    assert line["by_number"] == {"1": "one"}
    assert line["accounts"] == [{"name": "a", "Password": "***"}, ["x", {"api_key": "***"}]]
    assert "should-not-show" not in json.dumps(line)
