"""Running a command as a non-root user that the test makes: an uid with no rights of its own, shown the
Python installation and the folders it needs (Python lives under root's 0700 home on these machines).

Only for tests run as root: :func:`as_user` wraps a command; the wrapper (run as root) makes a mount
namespace in which the uid can reach ``show`` (the sandbox launcher's own ``expose_paths``), drops to the uid
and executes the command, which then knows nothing of root.
"""

from __future__ import annotations

import json
import sys

from shared.sandbox.policy import python_paths

NON_ROOT_UID = 610_990

_WRAPPER = """
import json, os, sys
from shared.sandbox.run import drop_to, expose_paths
spec = json.loads(sys.argv[1])
expose_paths(spec["show"], spec["uid"], spec["uid"])
drop_to(spec["uid"], spec["uid"])
os.execv(sys.argv[2], sys.argv[2:])
"""


def as_user(argv: list[str], show: list[str], uid: int = NON_ROOT_UID) -> list[str]:
    """``argv`` run as ``uid``, which can reach the Python installation and ``show``."""
    spec = {"uid": uid, "show": [*python_paths(), *show]}
    return [sys.executable, "-I", "-c", _WRAPPER, json.dumps(spec), *argv]
