"""The sandbox launcher: ``python -I -m shared.sandbox.run --policy JSON -- program args...``.

It runs as the first thing in the child, before any user code, single-threaded, and in this order:

1. closes every inherited file descriptor but stdin, stdout and stderr;
2. as root with an ``uid`` in the policy: a mount namespace of its own in which the folders that the uid
   could not traverse (``/root``, where Python lives on these machines; a data dir of mode 0700) are
   replaced by empty, traversable folders holding bind mounts of only what the process needs (the Python
   installation, the venv, its own folder), then drops to that uid and gid with no supplementary groups —
   which also drops every capability;
   as root without an ``uid``: empties the capability bounding set and drops every capability, so that
   ``execve`` gives none back (Landlock is then the gate, ``CAP_DAC_OVERRIDE`` is gone);
3. ``no_new_privs`` (no set-uid program can give privileges back);
4. resource limits: private memory, file size, open files, processes (own uid only), no core dumps; and a lower
   CPU priority (``nice``, 10 by default), for the process and for its session's autogroup: with the kernel's
   autogroup scheduling on (``/proc/sys/kernel/sched_autogroup_enabled``), every session is weighed as one task
   against every other, whatever its processes' nice, and a bot has a session of its own; so a hundred bots
   waking at the same candle would get a hundred shares of the CPU to the gateway's one (the autogroup's nice is
   set only by a session's leader: the session is then the process's own);
5. Landlock (:mod:`shared.sandbox.landlock`): filesystem, TCP and scopes, from :meth:`Policy.all_read` /
   :meth:`Policy.all_write` and the ports;
6. ``execve`` of the program with the policy's environment, in the process's own folder.

Any failure ends the launcher with exit code 126 and one line on stderr (``freqfleet-sandbox: ...``): a
process is never started with less isolation than asked for. ``--probe`` runs steps 1-5 on a throw-away
policy and prints what applied as JSON (the gateway and the worker call it at start).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Collection, Sequence

from shared.sandbox.landlock import LandlockError, Ruleset, abi_version
from shared.sandbox.policy import MIB, Policy

EXIT_SANDBOX_FAILED = 126
CLONE_NEWNS = 0x00020000
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)  # the C library Python itself is linked with


class SandboxError(RuntimeError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int) -> int:
    return int(
        _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    )


def close_inherited_fds(keep: Collection[int] = ()) -> None:
    """Close every file descriptor above stderr but ``keep``."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _traversable(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _blocked_ancestor(path: str, uid: int, gid: int) -> str | None:
    """The topmost folder above ``path`` that ``uid`` may not traverse, if any."""
    parts = path.strip("/").split("/")
    current = ""
    for part in parts[:-1]:
        current += "/" + part
        if not _traversable(os.stat(current), uid, gid):
            return current
    return None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            None if source is None else source.encode(),
            target.encode(),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            None if data is None else data.encode(),
        ),
        f"mount {target}",
    )


def expose_paths(paths: Sequence[str], uid: int, gid: int) -> list[str]:
    """In a new mount namespace, make each of ``paths`` reachable by ``uid`` (see the module's docstring).

    Returns the folders that were masked. Nothing changes outside this process's namespace.
    """
    needed = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})
    masks: dict[str, list[str]] = {}
    for path in needed:
        mask = _blocked_ancestor(path, uid, gid)
        if mask is not None:
            masks.setdefault(mask, []).append(path)
    if not masks:
        return []
    _check(_libc.unshare(ctypes.c_int(CLONE_NEWNS)), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Open every path that will be bound before a mask hides it; bind it back through /proc/self/fd.
    handles = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for leaves in masks.values() for p in leaves}
    try:
        for mask in sorted(masks, key=lambda m: m.count("/")):
            _mount("tmpfs", mask, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
            for leaf in sorted(masks[mask]):
                if any(leaf != other and leaf.startswith(other + "/") for other in masks[mask]):
                    continue  # already inside a bound folder
                fd = handles[leaf]
                relative = leaf[len(mask) :].strip("/").split("/")
                parent = mask
                for part in relative[:-1]:
                    parent = os.path.join(parent, part)
                    if not os.path.isdir(parent):
                        os.mkdir(parent, 0o755)
                target = os.path.join(parent, relative[-1])
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    os.mkdir(target, 0o755)
                else:
                    os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
                _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    finally:
        for fd in handles.values():
            os.close(fd)
    return sorted(masks)


def drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        raise SandboxError(f"could not become uid {uid}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty the bounding set, the ambient set and every capability of this process (root stays uid 0)."""
    for cap in range(64):
        if _prctl(PR_CAPBSET_DROP, cap) != 0:
            break  # EINVAL: past the last capability this kernel knows
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def set_limits(policy: Policy, own_uid: bool) -> None:
    limits = policy.limits

    def cap(which: int, value: int) -> None:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_DATA, limits.memory_mb * MIB)
    cap(resource.RLIMIT_FSIZE, limits.file_size_mb * MIB)
    cap(resource.RLIMIT_NOFILE, limits.open_files)
    cap(resource.RLIMIT_CORE, 0)
    if own_uid:
        cap(resource.RLIMIT_NPROC, limits.processes)


AUTOGROUP_RETRY = 5.0  # seconds: without CAP_SYS_ADMIN, the kernel lets autogroups' nice be set 10 times a second


def lower_priority(nice: int) -> dict[str, object]:
    """This process's nice raised to ``nice`` (never lowered), and its session's autogroup's when the session is its
    own (it leads it: a bot; a process in its caller's session would lower its caller's priority); what applied."""
    if nice <= 0:
        return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "autogroup_nice": None}
    os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    autogroup: int | None = None
    if os.getsid(0) != os.getpid():
        return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "autogroup_nice": None}
    deadline = time.monotonic() + AUTOGROUP_RETRY
    while True:
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
            autogroup = nice
            break
        except BlockingIOError:  # EAGAIN: another process set one within the last 100 ms
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        except OSError:  # no autogroup scheduling in this kernel (or under this cgroup): the nice is what counts
            break
    return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "autogroup_nice": autogroup}


def apply(policy: Policy, keep: Collection[int] = ()) -> dict[str, object]:
    """Steps 1-5 of the module's docstring in this process (``keep``: descriptors left open); what applied."""
    close_inherited_fds(keep)
    priority = lower_priority(policy.limits.nice)  # as root first: no rate limit on the autogroup's nice then
    uid = policy.uid if os.geteuid() == 0 else None
    masked: list[str] = []
    if uid is not None:
        masked = expose_paths([*policy.all_read(), *policy.all_write()], uid, uid)
        drop_to(uid, uid)
    elif os.geteuid() == 0:
        drop_capabilities()
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(PR_SET_NO_NEW_PRIVS)")
    set_limits(policy, own_uid=uid is not None)
    abi = abi_version()
    if abi >= 1:
        Ruleset(
            read=policy.all_read(),
            write=policy.all_write(),
            bind_ports=policy.bind_ports,
            connect_ports=policy.connect_ports,
        ).restrict_self(abi)
    elif policy.require_landlock:
        raise SandboxError("this kernel has no Landlock, and the policy requires it")
    return {"uid": os.getuid(), "landlock_abi": abi, "masked": masked, "no_new_privs": True, **priority}


def enter(policy: Policy, keep: Collection[int] = ()) -> dict[str, object]:
    """All but the last step, in this process: the policy's temporary folder made (the bot's uid owns it), steps
    1-5, then the working directory is the policy's home. What applied. The exec wrapper (``main``) then execs the
    program; the fork launcher's child (``shared.launcher.child``) calls Freqtrade's entry point."""
    os.makedirs(policy.tmpdir, mode=0o700, exist_ok=True)
    if policy.uid is not None and os.geteuid() == 0:
        os.chown(policy.tmpdir, policy.uid, policy.uid)
    applied = apply(policy, keep)
    os.chdir(policy.home)
    return applied


def _probe(uid: int | None) -> dict[str, object]:
    home = tempfile.mkdtemp(prefix="freqfleet-sandbox-probe-")
    try:
        if uid is not None and os.geteuid() == 0:
            os.chown(home, uid, uid)
        pid = os.fork()
        if pid == 0:  # the child applies the policy and reports through a pipe-less file
            code = 0
            try:
                result = apply(Policy(home=home, uid=uid, require_landlock=False))
                with open(os.path.join(home, "result.json"), "w") as f:
                    json.dump(result, f)
            except BaseException as exc:  # report any failure, exit the child in every case
                try:
                    with open(os.path.join(home, "error.txt"), "w") as f:
                        f.write(str(exc))
                except OSError:
                    pass
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        try:
            with open(os.path.join(home, "result.json")) as f:
                report: dict[str, object] = json.load(f)
            return {"ok": os.waitstatus_to_exitcode(status) == 0, **report}
        except OSError:
            try:
                with open(os.path.join(home, "error.txt")) as f:
                    error = f.read()
            except OSError:
                error = f"the probe exited with status {status}"
            return {"ok": False, "error": error}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--probe"]:
        uid = int(args[1]) if len(args) > 1 else None
        print(json.dumps(_probe(uid)))
        return 0
    if len(args) < 4 or args[0] != "--policy" or args[2] != "--":
        print("usage: python -m shared.sandbox.run --policy JSON -- program [args...]", file=sys.stderr)
        return 2
    try:
        policy = Policy.from_json(args[1])
        program = args[3:]
        enter(policy)
        os.execve(program[0], program, policy.child_env())  # noqa: S606 (the sandboxed program)
    except (SandboxError, LandlockError, OSError, ValueError, TypeError) as exc:
        print(f"freqfleet-sandbox: {exc}", file=sys.stderr)
        return EXIT_SANDBOX_FAILED


if __name__ == "__main__":
    sys.exit(main())
