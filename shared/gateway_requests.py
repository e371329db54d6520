"""A gateway vouching for the requests it makes to the management server on behalf of its MCP callers.

MCP tools call the management server with the caller's own token, but from the gateway's address, so the
management server's per-IP limit would make every agent of a gateway share one allowance. So the gateway signs
each such request with its identity's Ed25519 key (header ``X-Freqfleet-Gateway: <gateway id> <time ms>
<signature>``; the signature covers the domain, the gateway id, the time, the method and the sha256 of the
``Authorization`` header, so it is bound to that caller's token and to a minute), and the management server,
once it has checked it against the enrolled gateway's key, counts the request against the caller's own limit
only, not the gateway's address. A request without it, or with a bad one, is counted per IP as any other.
"""

from __future__ import annotations

import base64
import hashlib
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER = "X-Freqfleet-Gateway"
DOMAIN = "freqfleet-gateway-request/1"
MAX_SKEW_MS = 60_000


def _message(gateway_id: str, at_ms: int, method: str, authorization: str) -> bytes:
    token = hashlib.sha256(authorization.encode()).hexdigest()
    return f"{DOMAIN}\n{gateway_id}\n{at_ms}\n{method.upper()}\n{token}".encode()


def vouch(private: Ed25519PrivateKey, gateway_id: str, method: str, authorization: str) -> str:
    """The header's value for one request."""
    at_ms = int(time.time() * 1000)
    signature = private.sign(_message(gateway_id, at_ms, method, authorization))
    return f"{gateway_id} {at_ms} {base64.b64encode(signature).decode()}"


def claimed_gateway(value: str) -> str | None:
    """The gateway id a header names (not yet checked)."""
    parts = value.split(" ")
    return parts[0] if len(parts) == 3 and parts[0] else None


def vouched(public: Ed25519PublicKey, value: str, method: str, authorization: str, now_ms: int | None = None) -> bool:
    """Whether ``value`` is that gateway's fresh signature of this request."""
    parts = value.split(" ")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 15:
        return False
    gateway_id, at_ms, signature = parts[0], int(parts[1]), parts[2]
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - at_ms) > MAX_SKEW_MS:
        return False
    try:
        public.verify(base64.b64decode(signature, validate=True), _message(gateway_id, at_ms, method, authorization))
    except (InvalidSignature, ValueError):
        return False
    return True
