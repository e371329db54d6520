"""A hostile strategy that passes the lint: at import it tries to reach what the sandbox must keep out.

It uses only pandas (``read_csv`` of any path or URL, ``to_csv`` anywhere), which no lint can forbid, and
writes what it got into ``probe.json`` in its working folder: ``"denied: <error>"`` per target, or
``"GOT: <first bytes>"`` when the target was reached.
"""

from __future__ import annotations

import json
from pathlib import Path

PROBE_FILE = "probe.json"

PROBE = """
import pandas as _pd


def _probe(targets):
    results = {}
    for name, path in targets["read"].items():
        try:
            got = _pd.read_csv(path, header=None, sep="\\x01", encoding="latin-1")
            results[name] = "GOT: " + str(got.iloc[0, 0])[:40]
        except Exception as exc:
            results[name] = "denied: " + type(exc).__name__ + ": " + str(exc)[:200]
    for name, path in targets["write"].items():
        try:
            _pd.DataFrame({"a": [1]}).to_csv(path)
            results[name] = "GOT: wrote " + path
        except Exception as exc:
            results[name] = "denied: " + type(exc).__name__ + ": " + str(exc)[:200]
    _pd.Series(results).to_json("probe.json")


_stat = _pd.read_csv("/proc/self/stat", header=None, sep=" ").iloc[0]
_TARGETS = json.loads(TARGETS_JSON)
_TARGETS["read"]["parent_environ"] = "/proc/%d/environ" % int(_stat[3])
_probe(_TARGETS)
"""


def hostile_source(base_source: str, read: dict[str, str], write: dict[str, str]) -> str:
    """``base_source`` (a working strategy) with the probe run at import; ``read``/``write``: name -> path or URL."""
    targets = json.dumps({"read": read, "write": write})
    probe = "import json\nTARGETS_JSON = " + repr(targets) + "\n" + PROBE
    head, sep, rest = base_source.partition("\nclass ")
    return head + "\n" + probe + sep + rest


def read_probe(folder: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((folder / PROBE_FILE).read_text())
    return data
