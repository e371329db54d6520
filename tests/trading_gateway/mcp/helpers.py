"""MCP clients for the tests: the SDK's client over Streamable HTTP and over a WebSocket, and raw JSON-RPC.

The SDK's current line has no WebSocket client, so :func:`websocket_transport` is a minimal one: a
``websockets`` connection with the ``mcp`` subprotocol whose text frames are parsed with the SDK's
message model and handed to the SDK's client over a pair of memory streams (what the SDK's own stdio
and HTTP client transports yield), so ``mcp.Client`` runs over it unchanged.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect

TransportStreams = tuple[
    anyio.streams.memory.MemoryObjectReceiveStream[SessionMessage | Exception],
    anyio.streams.memory.MemoryObjectSendStream[SessionMessage],
]


def auth_headers(token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = dict(extra or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@asynccontextmanager
async def websocket_transport(
    url: str, token: str | None = None, *, headers: Mapping[str, str] | None = None
) -> AsyncIterator[TransportStreams]:
    """An MCP client transport over a WebSocket (subprotocol ``mcp``), for ``mcp.Client``."""
    async with connect(url, subprotocols=["mcp"], additional_headers=auth_headers(token, headers)) as ws:  # type: ignore[list-item]
        incoming_in, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](32)
        outgoing, outgoing_out = anyio.create_memory_object_stream[SessionMessage](32)

        async def receive() -> None:
            async with incoming_in:
                async for frame in ws:
                    try:
                        message = types.jsonrpc_message_adapter.validate_json(frame, by_name=False)
                    except ValidationError as exc:
                        await incoming_in.send(exc)
                        continue
                    await incoming_in.send(SessionMessage(message))

        async def transmit() -> None:
            async with outgoing_out:
                async for message in outgoing_out:
                    await ws.send(message.message.model_dump_json(by_alias=True, exclude_unset=True))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive)
            tasks.start_soon(transmit)
            try:
                yield incoming, outgoing
            finally:
                tasks.cancel_scope.cancel()


@asynccontextmanager
async def http_client(url: str, token: str | None, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's ``Client`` over Streamable HTTP with a bearer token."""
    async with (
        httpx2.AsyncClient(headers=auth_headers(token), timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


@asynccontextmanager
async def websocket_client(url: str, token: str | None, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's ``Client`` over our WebSocket transport."""
    async with Client(websocket_transport(url, token), mode=mode, read_timeout_seconds=60) as client:
        yield client


def result_data(result: types.CallToolResult) -> Any:
    """A successful tool result's JSON."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: types.CallToolResult) -> str:
    assert result.is_error, result.structured_content
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


class RawSession:
    """JSON-RPC 2.0 by hand over a plain WebSocket: what a client without an MCP SDK does."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self.ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.ws.send(json.dumps(message))
        with anyio.fail_after(60):
            while True:
                answer: dict[str, Any] = json.loads(await self.ws.recv())
                if answer.get("id") == request_id:
                    return answer

    async def notify(self, method: str) -> None:
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "method": method}))

    async def initialize(self) -> dict[str, Any]:
        answer = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw-websocket-test", "version": "1"},
            },
        )
        await self.notify("notifications/initialized")
        return answer

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = await self.request("tools/call", {"name": tool, "arguments": arguments or {}})
        assert "result" in answer, answer
        result: dict[str, Any] = answer["result"]
        return result


@asynccontextmanager
async def raw_session(url: str, token: str | None) -> AsyncIterator[RawSession]:
    async with connect(url, subprotocols=["mcp"], additional_headers=auth_headers(token)) as ws:  # type: ignore[list-item]
        yield RawSession(ws)
