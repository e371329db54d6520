"""Parsing Python source safely from several threads at once.

CPython 3.11 keeps the AST constructor's recursion counter in per-interpreter state, so two threads
in ``ast.parse`` at the same time can corrupt each other's count and one of them fails with
``SystemError: AST constructor recursion depth mismatch`` (python/cpython#106905; seen here when two
FreqAI trainings ran side by side). Every parse of ours goes through :func:`parse`, which holds one
lock for the parse: parses are milliseconds and rare (an upload, a bot spec, a training request).
"""

from __future__ import annotations

import ast
import threading

_PARSING = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(source, filename)``, one thread at a time; raises what ``ast.parse`` raises."""
    with _PARSING:
        return ast.parse(source, filename=filename)
