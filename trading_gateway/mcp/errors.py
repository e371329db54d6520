"""What a tool answers when it can't do what it was asked: a message a model can act on.

Tools raise these; the server turns them into a tool result with ``isError: true`` and the message
as its text, and audits the call as ``failure`` or ``denied``. Anything else a tool raises is a bug:
it is logged with its traceback and the caller gets a generic message with the call's request id,
never the exception's text.
"""

from __future__ import annotations

from typing import Literal


class ToolProblem(Exception):
    outcome: Literal["failure", "denied"] = "failure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ToolFailure(ToolProblem):
    """The call was allowed but could not be done (no such bot, bot not running, server away)."""

    outcome = "failure"


class ToolDenied(ToolProblem):
    """The caller may not do this (missing scope, someone else's bot, admin only, token no longer valid)."""

    outcome = "denied"
