"""Server side of ``bench.mcp``: the trading gateway exactly as ``trading_gateway.main.run`` builds it.

``python -m bench._mcp_server --port N``: settings from the ``FREQFLEET_*`` environment (the benchmark
sets Redis, the data folder, the gateway id and the management server's URL), JSON logging configured
first, then ``create_app``, served with the uvicorn settings of every server side (``bench._common.serve``).

``--no-limits``: the gateway without its per-user MCP limits (calls per minute, connections and sessions per
user, requests in flight per connection; the message size limit stays), the "before" of what they cost. Only
here: the product has no switch to turn them off.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench._common import serve
from shared.logging import configure_logging
from trading_gateway.config import get_settings
from trading_gateway.main import create_app
from trading_gateway.mcp import server as mcp_server
from trading_gateway.mcp.limits import CallRate, Connections, McpLimits, Sessions


class _AnyCalls(CallRate):
    def hit(self, user: str, now: float | None = None) -> None:
        return None

    def wait(self, user: str, now: float | None = None) -> float:
        return 0.0


class _AnyConnections(Connections):
    def open(self, user: str) -> None:
        return None

    def close(self, user: str) -> None:
        return None


class _AnySessions(Sessions):
    def may_open(self, user: str, now: float | None = None) -> None:
        return None

    def used(self, user: str, session_id: str, now: float | None = None) -> None:
        return None

    def ended(self, user: str, session_id: str) -> None:
        return None


def _without_limits(**given: Any) -> McpLimits:
    return McpLimits(
        calls=_AnyCalls(0),
        connections=_AnyConnections(0),
        sessions=_AnySessions(0, 0.0),
        max_message_bytes=given["max_message_bytes"],
        in_flight_per_connection=2**31,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-limits", action="store_true", help="without the per-user MCP limits")
    args = parser.parse_args(argv)
    if args.no_limits:
        setattr(mcp_server, "McpLimits", _without_limits)  # noqa: B010 - the name server.py builds its limits with
    settings = get_settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    serve(create_app(settings), args.port, ws_max_size=settings.mcp_max_message_bytes)  # as `freqfleet gateway` runs it


if __name__ == "__main__":
    main()
