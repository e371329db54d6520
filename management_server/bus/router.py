"""/.well-known/command-keys.json: the public keys that verify the commands on the bus (see ``signing.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from management_server.bus.signing import WELL_KNOWN_PATH
from management_server.deps import CommandKeysDep

router = APIRouter(tags=["bus"])


@router.get(WELL_KNOWN_PATH, summary="Public keys that verify bus commands")
async def command_keys(keys: CommandKeysDep) -> dict[str, Any]:
    """The management server's command-signing public keys (JWKS form); gateways act only on commands they verify."""
    jwks: dict[str, Any] = keys.jwks()
    return jwks
