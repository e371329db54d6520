"""Landlock through its three system calls (``landlock_create_ruleset``, ``_add_rule``, ``_restrict_self``).

Why ctypes and not a PyPI package: the packages that exist (``landlock`` 1.0.0.dev5, ``landlockpy`` 0.2) are
pre-releases, and what Freqfleet needs — filesystem rules, TCP bind/connect rules (ABI 4) and the scoping of
abstract Unix sockets and signals (ABI 6) — is about a hundred lines over three stable system calls whose
numbers are the same on every architecture (444-446, from the generic syscall table).

A ruleset *handles* a set of rights (everything the running kernel knows, see :func:`abi_version`); whatever
it handles is denied unless a rule grants it beneath a path (filesystem) or on a port (TCP). After
:meth:`Ruleset.restrict_self` the calling thread and everything it executes afterwards is bound by it, for
good: a process can only add restrictions, never lift them. ``no_new_privs`` must be set first (or the
process must hold ``CAP_SYS_ADMIN``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass, field

SYS_CREATE_RULESET = 444
SYS_ADD_RULE = 445
SYS_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

# Filesystem rights (ABI 1, then REFER in 2, TRUNCATE in 3, IOCTL_DEV in 5).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
# TCP rights (ABI 4).
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
# Scopes (ABI 6): no connecting to abstract Unix sockets, no signals, outside the sandbox.
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_FS_BY_ABI = {
    1: (1 << 13) - 1,
    2: (1 << 14) - 1,
    3: (1 << 15) - 1,
    4: (1 << 15) - 1,
    5: (1 << 16) - 1,
}
# Rights that make sense on a file (a rule on a file with any other right is refused by the kernel).
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
FS_ALL = (1 << 16) - 1


class LandlockError(OSError):
    """Landlock is missing or refused a ruleset; the message says which step."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)  # the C library Python itself is linked with
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def abi_version() -> int:
    """The Landlock ABI of the running kernel; 0 when Landlock is not built in or not enabled."""
    try:
        return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            return 0
        raise


def handled_fs(abi: int) -> int:
    return _FS_BY_ABI[min(abi, 5)]


@dataclass
class Ruleset:
    """What a sandboxed process may do: read or fully use paths, bind and connect TCP ports.

    ``read`` grants reading files, listing folders and executing; ``write`` grants every filesystem right
    beneath a path. With ``net`` set (ABI 4 or later), TCP ``bind`` is allowed only on ``bind_ports`` and
    ``connect`` only to ``connect_ports``; with ``scope`` (ABI 6 or later), signals and abstract Unix sockets
    cannot reach processes outside the sandbox. Paths that do not exist are skipped.
    """

    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    bind_ports: list[int] = field(default_factory=list)
    connect_ports: list[int] = field(default_factory=list)
    net: bool = True
    scope: bool = True

    def restrict_self(self, abi: int | None = None) -> int:
        """Apply the ruleset to this process (and what it executes); returns the ABI used."""
        abi = abi_version() if abi is None else abi
        if abi < 1:
            raise LandlockError(errno.EOPNOTSUPP, "Landlock is not available in this kernel")
        fs = handled_fs(abi)
        net = (NET_BIND_TCP | NET_CONNECT_TCP) if self.net and abi >= 4 else 0
        scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if self.scope and abi >= 6 else 0
        attr = _RulesetAttr(fs, net, scoped)
        size = 24 if abi >= 6 else 16 if abi >= 4 else 8
        try:
            ruleset_fd = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
        except OSError as exc:
            raise LandlockError(exc.errno, f"landlock_create_ruleset: {exc.strerror}") from None
        try:
            for path in self.read:
                self._add_path(ruleset_fd, path, FS_READ & fs)
            for path in self.write:
                self._add_path(ruleset_fd, path, fs)
            if net:
                for port in sorted(set(self.bind_ports)):
                    self._add_port(ruleset_fd, port, NET_BIND_TCP)
                for port in sorted(set(self.connect_ports)):
                    self._add_port(ruleset_fd, port, NET_CONNECT_TCP)
            try:
                _syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
            except OSError as exc:
                raise LandlockError(exc.errno, f"landlock_restrict_self: {exc.strerror}") from None
        finally:
            os.close(ruleset_fd)
        return abi

    @staticmethod
    def _add_path(ruleset_fd: int, path: str, access: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= FS_FILE_RIGHTS
            rule = _PathBeneathAttr(access, fd)
            try:
                _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset_fd), ctypes.c_int(RULE_PATH_BENEATH), ctypes.byref(rule), 0)
            except OSError as exc:
                raise LandlockError(exc.errno, f"landlock_add_rule {path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    @staticmethod
    def _add_port(ruleset_fd: int, port: int, access: int) -> None:
        rule = _NetPortAttr(access, port)
        try:
            _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset_fd), ctypes.c_int(RULE_NET_PORT), ctypes.byref(rule), 0)
        except OSError as exc:
            raise LandlockError(exc.errno, f"landlock_add_rule port {port}: {exc.strerror}") from None
