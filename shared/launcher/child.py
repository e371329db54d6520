"""What a forked child does, in this order, before Freqtrade's own entry point (``freqtrade.main.main``) runs with
the arguments ``freqtrade trade`` gets from the exec path:

1. a session of its own (process group = pid, as ``start_new_session`` gives an exec'd bot), the signal
   dispositions a fresh interpreter has, no handler of the launcher's logging;
2. stdin from ``/dev/null``, stdout and stderr to the console descriptor the gateway sent;
3. the bot's environment instead of the launcher's (``os.environ``, which ``putenv``s: C code sees it too);
4. the sandbox, with the very code the exec wrapper runs (``shared.sandbox.run.enter``: inherited descriptors
   closed but the status pipe, uid, no_new_privs, rlimits, Landlock, the bot's folder as working directory);
   without a policy, the descriptors closed and the folder entered;
5. a ``__main__`` of its own (multiprocessing's forkserver, which Freqtrade selects, imports the parent's
   ``__main__``: it must not be the launcher's), ``sys.argv`` and the process title (``ps``, and the gateway's
   adoption, read the command line), fresh NumPy randomness, and the lease watchdog when the request names a lease
   file (``shared.watchdog``: its timer thread is the child's, started after the fork);
6. "ok" on the status pipe, with what the sandbox applied; any failure before that is reported there, printed as
   ``freqfleet-sandbox: ...`` and ends the child with 126, as the exec wrapper does.

Freqtrade's ``SystemExit`` becomes the process's exit code; the child never returns into the launcher's code
(``os._exit``), so none of the launcher's frames, ``finally`` blocks or objects' finalizers run in a bot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import traceback
import types
from typing import Any, NoReturn

import setproctitle

from shared.sandbox.policy import Policy
from shared.sandbox.run import EXIT_SANDBOX_FAILED, close_inherited_fds, enter
from shared.watchdog import install as install_watchdog


def _fresh_interpreter_signals() -> None:
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as CPython sets it at start
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _stdio(console: int) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(console, 1)
    os.dup2(console, 2)
    for fd in {devnull, console} - {0, 1, 2}:
        os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def _own_main(program: str) -> None:
    main = types.ModuleType("__main__")
    main.__file__ = program
    main.__dict__["__spec__"] = None
    sys.modules["__main__"] = main


def prepare(request: dict[str, Any], console: int, status: int) -> dict[str, Any] | None:
    """Steps 1-5; what the sandbox applied (None without one)."""
    os.setsid()
    _fresh_interpreter_signals()
    logging.root.handlers.clear()  # Freqtrade's basicConfig does nothing while the root has handlers
    logging.root.setLevel(logging.WARNING)
    _stdio(console)
    argv = [str(a) for a in request["argv"]]
    policy = Policy.from_json(request["policy"]) if request.get("policy") else None
    env = policy.child_env() if policy is not None else dict(request["env"])
    os.environ.clear()
    os.environ.update(env)
    if policy is not None:
        applied: dict[str, Any] | None = enter(policy, keep=(status,))
    else:
        close_inherited_fds(keep=(status,))
        os.chdir(request["cwd"])
        applied = None
    _own_main(argv[0])
    sys.argv = argv
    setproctitle.setproctitle(" ".join(argv))
    sys.modules["numpy"].random.seed()  # NumPy's legacy global generator is not reseeded by fork; random's is
    if watchdog := request.get("watchdog"):
        install_watchdog(str(watchdog["lease_file"]), str(watchdog["bot_id"]))
    return applied


def run(request: dict[str, Any], console: int, status: int) -> NoReturn:
    """The child's whole life: never returns."""
    try:
        applied = prepare(request, console, status)
        os.write(status, json.dumps({"ok": True, "sandbox": applied}).encode())
        os.close(status)
    except BaseException as exc:  # any failure: reported, and the bot never starts
        try:
            os.write(status, json.dumps({"ok": False, "stage": "sandbox", "error": str(exc)[:2000]}).encode())
            print(f"freqfleet-sandbox: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(EXIT_SANDBOX_FAILED)
    code = 1
    try:
        sys.modules["freqtrade.main"].main(sys.argv[1:])  # imported by the launcher
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # the bot's crash: printed to its console, exit 1
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # the console may be gone: exit anyway
                stream.flush()
    os._exit(code)
