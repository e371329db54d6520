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


DATABASE_AWAY = "The database is not answering (a failover, a restart): try again in a few seconds."


def database_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the database was out of reach (connection lost or refused, a server that no longer takes
    writes): the request may succeed as it is a moment later, so it is a 503, not a 500."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (InterfaceError, OperationalError))
    return isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith("asyncpg.exceptions")


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
