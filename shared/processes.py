"""Ending a child process together with everything it started."""

from __future__ import annotations

import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen[bytes], term_wait: float = 10.0, kill_wait: float = 5.0) -> None:
    """SIGTERM the child's process group (it was started with ``start_new_session``), SIGKILL it after
    ``term_wait`` seconds, and reap the child."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.wait(kill_wait)
