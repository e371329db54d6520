"""What sandboxing this host gives, found out once at a service's start, and the policies built from it.

:func:`detect` runs the launcher's probe (``python -m shared.sandbox.run --probe [uid]``) in a child, so what
is reported is what a sandboxed process really gets, not what the kernel's version promises:

- ``uid+landlock`` — the service runs as root: each sandboxed process runs as an uid of its own (in a mount
  namespace that exposes only what it needs) under Landlock;
- ``landlock`` — the service is not root (or root can't make mount namespaces): Landlock alone, as the
  service's own uid (as root: with every capability dropped);
- ``none`` — the kernel has no Landlock: nothing keeps untrusted code in. Only code an admin uploaded runs
  then, unless the operator set ``FREQFLEET_ALLOW_UNSANDBOXED=true``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

from shared.logging import get_logger
from shared.sandbox.policy import Limits, Policy, wrap

log = get_logger(__name__)

Mode = Literal["uid+landlock", "landlock", "none"]
PROBE_TIMEOUT = 30.0
HTTPS_PORT = 443
CHECK_UID_OFFSET = 1  # the strategy check's uid is the base + 1
TRAINING_UID_OFFSET = 2  # a training's uid is the base + 2


class UnsandboxedRefused(RuntimeError):
    """Untrusted code would run without a sandbox; the message says why and what the operator can do."""


@dataclass(frozen=True)
class HostSandbox:
    mode: Mode
    landlock_abi: int
    uid_base: int
    limits: Limits
    allow_unsandboxed: bool = False
    detail: str = ""

    @property
    def own_uids(self) -> bool:
        return self.mode == "uid+landlock"

    def describe(self) -> str:
        if self.mode == "uid+landlock":
            return f"each bot, check and training as an uid of its own under Landlock ABI {self.landlock_abi}"
        if self.mode == "landlock":
            return f"Landlock ABI {self.landlock_abi} as the service's own user (no uid per bot: not root)"
        return "none: this kernel has no Landlock" + (f" ({self.detail})" if self.detail else "")

    def check_allowed(self, trusted: bool, what: str) -> None:
        """Refuse to run untrusted code unsandboxed, unless the operator allowed it."""
        if self.mode != "none" or trusted or self.allow_unsandboxed:
            return
        raise UnsandboxedRefused(
            f"{what} runs a plain user's strategy, and this host has no sandbox (its kernel has no Landlock): "
            "only strategies uploaded by an admin run here, unless the operator sets FREQFLEET_ALLOW_UNSANDBOXED=true"
        )

    def policy(
        self,
        home: Path,
        *,
        env: Mapping[str, str],
        uid: int | None,
        bind_ports: list[int] | None = None,
        connect_ports: list[int] | None = None,
        read: list[str] | None = None,
    ) -> Policy | None:
        """The policy for a process in ``home``; None when the host has no sandbox (the caller runs it plain)."""
        if self.mode == "none":
            return None
        return Policy(
            home=str(home),
            read=list(read or []),
            bind_ports=list(bind_ports or []),
            connect_ports=list(connect_ports or []),
            env=dict(env),
            uid=uid if self.own_uids else None,
            limits=self.limits,
        )


def exchange_ports(simulator_url: str | None, exchange: str) -> list[int]:
    """The TCP ports a process talking to ``exchange`` must reach: the simulator's, or HTTPS for a real one."""
    if exchange != "simulator":
        return [HTTPS_PORT]
    return [_port(simulator_url)] if simulator_url else []


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (HTTPS_PORT if parts.scheme == "https" else 80)


def _probe(uid: int | None) -> dict[str, Any]:
    """The launcher's probe in a child: what applied (``ok``, ``uid``, ``landlock_abi``) or ``error``."""
    argv = [sys.executable, "-I", "-m", "shared.sandbox.run", "--probe"] + ([str(uid)] if uid is not None else [])
    try:
        out = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, check=False, env={"PATH": os.defpath})
        report: dict[str, Any] = json.loads(out.stdout.decode() or "{}")
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        report = {"ok": False, "error": str(exc)}
    return report


def detect(uid_base: int, limits: Limits, allow_unsandboxed: bool = False) -> HostSandbox:
    """Probe this host (see the module's docstring)."""
    as_root = os.geteuid() == 0
    report = _probe(uid_base if as_root else None)
    abi = int(report.get("landlock_abi", 0) or 0)
    mode: Mode = "none"
    detail = str(report.get("error", ""))
    if report.get("ok") and abi >= 1:
        mode = "uid+landlock" if as_root and report.get("uid") == uid_base else "landlock"
    elif as_root:
        # The uid route failed (no mount namespace here?): try Landlock alone, as root without capabilities.
        second = _probe(None)
        abi = int(second.get("landlock_abi", 0) or 0)
        if second.get("ok") and abi >= 1:
            mode = "landlock"
    host = HostSandbox(mode, abi, uid_base, limits, allow_unsandboxed, detail)
    if mode == "none":
        log.warning(
            "no sandbox for user code on this host", detail=host.describe(), allow_unsandboxed=allow_unsandboxed
        )
    else:
        log.info("sandbox for user code", mode=mode, landlock_abi=abi, detail=host.describe())
    return host


def hand_over(folder: Path, uid: int) -> None:
    """Give ``folder`` and everything in it to ``uid`` (and its gid) without following any symlink in it."""
    os.lchown(folder, uid, uid)
    for parent, dirs, names in os.walk(folder, followlinks=False):
        for name in (*dirs, *names):
            os.lchown(os.path.join(parent, name), uid, uid)


def stray_entry(folder: Path) -> Path | None:
    """The first symlink or special file (FIFO, socket, device) under ``folder``; None when there is none.

    Sandboxed code may plant one in its folder for the service that reads its results afterwards (a log
    that is a link to a key): a service refuses to read a folder that holds one.
    """
    for parent, dirs, names in os.walk(folder, followlinks=False):
        for name in (*dirs, *names):
            path = Path(parent, name)
            mode = path.lstat().st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return path
    return None


def popen_sandboxed(
    argv: list[str], *, home: Path, policy: Policy | None, env: Mapping[str, str], stdout: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``home`` under ``policy`` (plain when None), in a process group of its own."""
    if policy is not None:
        if policy.uid is not None and os.geteuid() == 0:
            hand_over(home, policy.uid)
        argv = wrap(policy, argv)
    return subprocess.Popen(
        argv,
        cwd=home,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
