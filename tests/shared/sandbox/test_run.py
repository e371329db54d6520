"""The sandbox launcher on its own: what a process under a policy can and cannot reach, as root with an uid of
its own, as root with Landlock alone (every capability dropped), and started by a non-root user (Landlock
alone: the test makes that user — an uid with no other right — and shows it the Python installation)."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.sandbox.landlock import abi_version
from shared.sandbox.policy import Policy, wrap
from shared.sandbox.run import EXIT_SANDBOX_FAILED
from tests.non_root import NON_ROOT_UID, as_user

pytestmark = pytest.mark.skipif(abi_version() < 4, reason="needs Landlock with TCP rules (ABI 4)")

ATTACK = r"""
import json, os, socket, sys
out = {}
def attempt(name, fn):
    try:
        out[name] = "GOT: " + str(fn())[:60]
    except Exception as exc:
        out[name] = "denied: " + type(exc).__name__
args = json.loads(sys.argv[1])
attempt("secret", lambda: open(args["secret"]).read())
attempt("parent_environ", lambda: open("/proc/%d/environ" % os.getppid(), "rb").read())
attempt("write_outside", lambda: open(args["outside"], "w").write("x"))
attempt("write_home", lambda: open("mine.txt", "w").write("x"))
attempt("connect_other", lambda: socket.create_connection(("127.0.0.1", args["other_port"]), 2).close())
attempt("connect_allowed", lambda: socket.create_connection(("127.0.0.1", args["allowed_port"]), 2).close())
def bind(port):
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.close()
attempt("bind_own", lambda: bind(args["bind_port"]))
attempt("bind_other", lambda: bind(args["bind_other"]))
attempt("kill_parent", lambda: os.kill(os.getppid(), 0))
attempt("env", lambda: sorted(os.environ))
attempt("uid", lambda: os.getuid())
attempt("nnp", lambda: [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1])
attempt("nice", lambda: os.getpriority(os.PRIO_PROCESS, 0))
attempt("caps", lambda: [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1])
print(json.dumps(out))
"""


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("mode", ["uid+landlock", "landlock-alone", "non-root"])
def test_a_sandboxed_process_reaches_only_its_folder_and_its_ports(tmp_path: Path, mode: str) -> None:
    if os.geteuid() != 0 and mode != "landlock-alone":
        pytest.skip("an uid per process, or making a non-root user, needs root")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    uid = 610_999 if mode == "uid+landlock" else None
    owner = {"uid+landlock": 610_999, "non-root": NON_ROOT_UID}.get(mode)
    if owner is not None:
        os.chown(home, owner, owner)
    secret = tmp_path / "master.keys"
    secret.write_text("TOPSECRET")
    secret.chmod(0o600)
    if mode == "non-root":
        os.chown(secret, NON_ROOT_UID, NON_ROOT_UID)  # its own file: only Landlock keeps it out
        tmp_path.chmod(0o755)  # the test's folder: the user may enter it, Landlock decides
    allowed, other = _listener(), _listener()
    bind_port, bind_other = _free_port(), _free_port()
    args = {
        "secret": str(secret),
        "outside": str(tmp_path / "pwned.txt"),
        "other_port": other.getsockname()[1],
        "allowed_port": allowed.getsockname()[1],
        "bind_port": bind_port,
        "bind_other": bind_other,
    }
    policy = Policy(
        home=str(home),
        env={"PATH": "/usr/bin:/bin"},
        uid=uid,
        bind_ports=[bind_port],
        connect_ports=[allowed.getsockname()[1]],
    )
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://u:pw@x/db"}  # never passed on
    try:
        argv = wrap(policy, [sys.executable, "-c", ATTACK, json.dumps(args)])
        if mode == "non-root":
            argv = as_user(argv, show=[str(tmp_path)])
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=60,
            env=env,
            check=False,
        )
    finally:
        allowed.close()
        other.close()
    assert done.returncode == 0, done.stderr.decode()
    got = json.loads(done.stdout)
    for name in ("secret", "parent_environ", "write_outside", "connect_other", "bind_other", "kill_parent"):
        assert got[name].startswith("denied: "), (name, got[name])
    for name in ("write_home", "connect_allowed", "bind_own"):
        assert got[name].startswith("GOT: "), (name, got[name])
    # The policy's environment only (Python itself may add LC_CTYPE): not the caller's DATABASE_URL.
    assert set(ast.literal_eval(got["env"].removeprefix("GOT: "))) <= {"HOME", "PATH", "TMPDIR", "LC_CTYPE"}
    assert got["nnp"] == "GOT: 1"
    assert got["nice"] == "GOT: 10"  # behind the services, which run at 0
    assert got["caps"] == "GOT: 0000000000000000"
    assert got["uid"] == f"GOT: {owner if owner is not None else os.geteuid()}"
    assert not (tmp_path / "pwned.txt").exists()


def test_a_policy_that_cannot_be_applied_runs_nothing() -> None:
    """A policy the launcher can't apply ends it with 126 and one line on stderr: nothing runs unsandboxed."""
    done = subprocess.run(
        [sys.executable, "-I", "-m", "shared.sandbox.run", "--policy", "{not json", "--", "/bin/true"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EXIT_SANDBOX_FAILED
    assert done.stderr.decode().startswith("freqfleet-sandbox: ")
