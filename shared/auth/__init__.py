"""Verifying Freqfleet tokens (both services) and revoking them (shared through Redis)."""

from shared.auth.claims import TokenClaims, TokenType
from shared.auth.revocation import RevocationStore
from shared.auth.verifier import InvalidToken, JwksKeySource, StaticKeySource, TokenVerifier

__all__ = [
    "InvalidToken",
    "JwksKeySource",
    "RevocationStore",
    "StaticKeySource",
    "TokenClaims",
    "TokenType",
    "TokenVerifier",
]
