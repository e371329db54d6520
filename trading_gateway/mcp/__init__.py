"""MCP for AI agents: the fleet over WebSocket (``/mcp/ws``) and Streamable HTTP (``/mcp``).

- :mod:`~trading_gateway.mcp.server`: the official SDK's ``Server`` with our handlers; calls are checked,
  run and audited there.
- :mod:`~trading_gateway.mcp.tools` and :mod:`~trading_gateway.mcp.resources`: what agents can read and do.
- :mod:`~trading_gateway.mcp.transports`: our WebSocket transport and the SDK's Streamable HTTP app.
- :mod:`~trading_gateway.mcp.auth`: tokens and origins, checked before a connection is accepted.
- :mod:`~trading_gateway.mcp.management`: the management server's API, called with the caller's token.
- :mod:`~trading_gateway.mcp.audit`: one ``MCP_CALL`` event per call, for the management server's audit log.
"""
