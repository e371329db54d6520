"""Child process supervision for ``freqfleet up``.

Each service runs as its own process in its own session (so a Ctrl-C in the terminal
reaches only ``up``, which then stops them in order) and asks the kernel to send it
SIGTERM should ``up`` itself die. A child that exits on its own is restarted with
exponential backoff; the backoff resets once it has stayed up for a while.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.logging import get_logger

log = get_logger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child before exec: SIGTERM when the parent goes away."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


class Supervisor:
    """Starts children, restarts the ones that die, stops them all in reverse order."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        healthy_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = [Child(spec) for spec in specs]
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.clock = clock

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            list(child.spec.argv),
            env=dict(child.spec.env),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child.started_at = self.clock()
        child.restart_at = None
        log.info("child started", child=child.spec.name, pid=child.proc.pid)

    def start(self, *names: str) -> None:
        """Start the named children (in the order given)."""
        by_name = {child.spec.name: child for child in self.children}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise KeyError(f"no such child: {', '.join(unknown)}")
        for name in names:
            if by_name[name].proc is None:
                self._spawn(by_name[name])

    def start_all(self) -> None:
        """Start every child not started yet, in order."""
        for child in self.children:
            if child.proc is None and child.restart_at is None:
                self._spawn(child)

    def check(self) -> None:
        """Notice children that exited and (re)start the ones whose backoff has passed."""
        now = self.clock()
        for child in self.children:
            if child.proc is not None and (code := child.proc.poll()) is not None:
                uptime = now - child.started_at
                child.exit_codes.append(code)
                _signal_group(child.proc.pid, signal.SIGKILL)  # what it left in its group
                child.proc = None
                if uptime >= self.healthy_after:
                    child.backoff = 0.0
                child.backoff = min(self.max_backoff, max(self.min_backoff, child.backoff * 2))
                child.restart_at = now + child.backoff
                log.warning(
                    "child exited; restarting",
                    child=child.spec.name,
                    exit_code=code,
                    uptime_s=round(uptime, 1),
                    restart_in_s=child.backoff,
                )
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM every child's process group (last started first), SIGKILL what is left."""
        for child in reversed(self.children):
            child.restart_at = None
            if child.proc is not None and child.proc.poll() is None:
                log.info("stopping child", child=child.spec.name, pid=child.proc.pid)
                _signal_group(child.proc.pid, signal.SIGTERM)
        deadline = self.clock() + grace
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                log.warning("child did not stop in time; killing it", child=child.spec.name)
                _signal_group(child.proc.pid, signal.SIGKILL)
                child.proc.wait(5)
            # Whatever the child left in its group (worker processes) goes with it.
            _signal_group(child.proc.pid, signal.SIGKILL)
            child.proc = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
