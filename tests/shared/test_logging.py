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
