"""What a sandboxed process may reach, and how a command is wrapped to run under it.

A :class:`Policy` travels to the launcher (:mod:`shared.sandbox.run`) as JSON on its command line; it holds
paths, ports, limits, an uid and the (already cleaned) environment, never a secret. :func:`wrap` turns a
command into ``python -I -m shared.sandbox.run --policy JSON -- command...``: the launcher applies the policy
in the child, before any of the command's code runs, then ``execve``s it.

The filesystem a sandboxed process sees (Landlock):

- read and execute: the system's libraries and programs (``/usr``, ``/lib*``, ``/bin``, ``/sbin``), the few
  files of ``/etc`` that name resolution, TLS and time zones need, ``/proc`` and ``/sys`` (another process's
  ``/proc/<pid>/environ`` stays out of reach: Landlock refuses ptrace-like access outside the sandbox, and
  so do different uids), the Python installation and the virtual environment, Freqfleet's ``shared``
  package (FreqAI bots load the Freqfleet model classes from it), and whatever the caller adds (a strategy);
- everything: the process's own folder, ``/dev/null``;
- nothing else: not the data dir's keys, not another bot's folder, not ``/tmp`` (``TMPDIR`` is the
  process's own ``tmp/``).

TCP (Landlock ABI 4 and later): ``bind`` only on ``bind_ports`` (a bot's API port), ``connect`` only to
``connect_ports`` (its exchange: 443 and the simulator's port): not Valkey, not PostgreSQL, not the
services. Signals and abstract Unix sockets can't leave the sandbox (ABI 6).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import shared

# Files and folders of /etc a Python program with ccxt, TLS and time zones reads; the rest of /etc stays closed.
ETC_READ = (
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/locale.alias",
    "/etc/mime.types",
    "/etc/os-release",
)
SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/proc",
    "/sys",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
)
SYSTEM_WRITE = ("/dev/null",)

MIB = 1024 * 1024
# Default limits of a sandboxed process (each one overridable by the caller's settings).
DEFAULT_MEMORY_MB = 4096  # RLIMIT_DATA: private writable memory (heap, anonymous mmap, thread stacks)
DEFAULT_FILE_SIZE_MB = 4096  # RLIMIT_FSIZE: the largest file it may write
DEFAULT_OPEN_FILES = 4096  # RLIMIT_NOFILE
DEFAULT_PROCESSES = 512  # RLIMIT_NPROC: processes and threads of its uid (only with an uid of its own)
DEFAULT_NICE = 10  # CPU priority behind the services (which run at 0): a busy fleet does not starve its gateway


def python_paths() -> list[str]:
    """The Python installation, the virtual environment and Freqfleet's ``shared`` package (read only)."""
    paths = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.add(str(Path(shared.__file__).resolve().parent))
    return sorted(os.path.realpath(p) for p in paths)


@dataclass
class Limits:
    memory_mb: int = DEFAULT_MEMORY_MB
    file_size_mb: int = DEFAULT_FILE_SIZE_MB
    open_files: int = DEFAULT_OPEN_FILES
    processes: int = DEFAULT_PROCESSES
    nice: int = DEFAULT_NICE


@dataclass
class Policy:
    """What one sandboxed process may reach; :func:`wrap` runs a command under it.

    :param home: the process's own folder (read-write, its working directory, ``HOME`` and ``TMPDIR`` below it).
    :param uid: run as this uid (and its own gid) — only when the caller is root; None keeps the caller's.
    :param require_landlock: refuse to run (exit code 126) when the kernel has no Landlock.
    """

    home: str
    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    bind_ports: list[int] = field(default_factory=list)
    connect_ports: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    uid: int | None = None
    limits: Limits = field(default_factory=Limits)
    require_landlock: bool = True

    @property
    def tmpdir(self) -> str:
        return os.path.join(self.home, "tmp")

    def all_read(self) -> list[str]:
        return sorted({*SYSTEM_READ, *ETC_READ, *python_paths(), *self.read})

    def all_write(self) -> list[str]:
        return sorted({*SYSTEM_WRITE, self.home, *self.write})

    def child_env(self) -> dict[str, str]:
        env = dict(self.env)
        env.update({"HOME": self.home, "TMPDIR": self.tmpdir})
        return env

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        data: dict[str, Any] = json.loads(text)
        data["limits"] = Limits(**data.get("limits", {}))
        return cls(**data)


def wrap(policy: Policy, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` under ``policy`` (the launcher applies it, then executes ``argv``)."""
    return [sys.executable, "-I", "-m", "shared.sandbox.run", "--policy", policy.to_json(), "--", *argv]
