"""The error body every route documents: ``{"detail": "..."}`` with a message a person can act on."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    detail: str


class Refused(Exception):
    """What a service can't do as asked: ``status`` is the HTTP status to answer, the message says why (a person
    can act on it). Each feature has its own kind (``BotRefused``, ``ModelRefused``, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these status codes, all with ``ErrorOut``."""
    descriptions = {
        400: "The request is not acceptable as it is; the detail says why",
        401: "Not authenticated, or the token is invalid or expired",
        403: "Not allowed for this account or token",
        404: "No such resource (or not yours)",
        409: "Conflicts with the current state",
        429: "Too many requests; see Retry-After",
        503: "A dependency is unavailable; try again shortly",
    }
    return {code: {"model": ErrorOut, "description": descriptions[code]} for code in codes}
