"""The launcher's messages: one JSON object per datagram on a ``SOCK_SEQPACKET`` socket pair (message boundaries
kept), file descriptors beside it (``SCM_RIGHTS``), and the exit records it leaves for the gateway.

The gateway makes the pair and hands one end to the launcher it starts (``pass_fds``): the socket has no name, so
no other process (a bot running as the gateway's user, when there is no uid per bot) can ask the launcher for
anything.

Requests and answers:

- ``{"op": "hello"}`` -> ``{"ok": true, "pid", "freqtrade", "ccxt", "modules", "threads", "freqai", "environment"}``
  (the names of its environment variables)
- ``{"op": "spawn", "argv": [...], "cwd", "env": {...}, "policy": <Policy JSON> | null}`` with the console's
  descriptor (stdout and stderr of the bot) -> ``{"ok": true, "pid", "create_time", "sandbox"}`` once the child
  has applied its sandbox, or ``{"ok": false, "stage", "error"}`` (the child is gone).

A child's exit is written by the launcher (its parent, the one that can learn its status) to
``<exits>/<pid>.json``: ``{"pid", "create_time", "exit_code"}``, the code negative for a signal as
``subprocess`` has it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.files import atomic_write

MAX_MESSAGE = 1 << 20
MAX_FDS = 4


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [json.dumps(message).encode()], list(fds))


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and its descriptors; ``None`` when the other end is gone."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    message: dict[str, Any] = json.loads(data)
    return message, fds


def exit_record(exits: Path, pid: int) -> Path:
    return exits / f"{pid}.json"


def write_exit(exits: Path, pid: int, create_time: float, exit_code: int) -> None:
    """Atomically, mode 0600: a reader sees the whole record or none."""
    record = {"pid": pid, "create_time": create_time, "exit_code": exit_code}
    atomic_write(exit_record(exits, pid), json.dumps(record).encode())


def read_exit(exits: Path, pid: int, create_time: float, tolerance: float) -> int | None:
    """The exit code of the child ``pid`` that started at ``create_time``, once the launcher recorded it."""
    try:
        record = json.loads(exit_record(exits, pid).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or abs(float(record.get("create_time", 0)) - create_time) > tolerance:
        return None  # another process that had the same pid
    code = record.get("exit_code")
    return code if isinstance(code, int) else None
