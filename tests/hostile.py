"""A hostile strategy that passes the lint: at import it tries to reach what the sandbox must keep out.

It uses only pandas (``read_csv`` of any path or URL, ``to_csv`` anywhere), which no lint can forbid, and
writes what it got into ``probe.json`` in its working folder: ``"denied: <error>"`` per target, or
``"GOT: <first bytes>"`` when the target was reached.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
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
    return results


_stat = _pd.read_csv("/proc/self/stat", header=None, sep=" ").iloc[0]
_TARGETS = json.loads(TARGETS_JSON)
_TARGETS["read"]["parent_environ"] = "/proc/%d/environ" % int(_stat[3])
_REPORT = _probe(_TARGETS)
if RAISE_REPORT:  # where the folder is gone afterwards (a strategy check): the report travels in the error
    raise RuntimeError("PROBE-REPORT " + json.dumps(_REPORT))
"""


def hostile_source(base_source: str, read: dict[str, str], write: dict[str, str], *, raise_report: bool = False) -> str:
    """``base_source`` (a working strategy) with the probe run at import; ``read``/``write``: name -> path or URL.

    With ``raise_report`` the import then fails with ``PROBE-REPORT {...}`` (see :func:`report_in`).
    """
    targets = json.dumps({"read": read, "write": write})
    probe = f"import json\nTARGETS_JSON = {targets!r}\nRAISE_REPORT = {raise_report!r}\n" + PROBE
    head, sep, rest = base_source.partition("\nclass ")
    return head + "\n" + probe + sep + rest


def read_probe(folder: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((folder / PROBE_FILE).read_text())
    return data


def report_in(text: str) -> dict[str, str]:
    """The report a ``raise_report`` probe put into an error message or a log."""
    match = re.search(r"PROBE-REPORT (\{.*?\})(?:'|\"|$|\n)", text, re.MULTILINE)
    assert match is not None, f"no probe report in: {text[-2000:]}"
    data: dict[str, str] = json.loads(match.group(1))
    return data


@contextmanager
def worker_targets(tmp_path: Path, base_source: str) -> Iterator[str]:
    """A hostile ``raise_report`` variant of ``base_source`` aimed at a key file and a listening "Valkey" (both
    beside ``tmp_path``) and at writing outside; yields the source. Check it with :func:`assert_contained`."""
    secret = tmp_path / "master.keys"
    secret.write_text("TOPSECRET")
    secret.chmod(0o600)
    with socket.socket() as valkey:
        valkey.bind(("127.0.0.1", 0))
        valkey.listen()
        yield hostile_source(
            base_source,
            read={"master_keys": str(secret), "valkey": f"http://127.0.0.1:{valkey.getsockname()[1]}/"},
            write={"outside": str(tmp_path / "pwned.csv")},
            raise_report=True,
        )


def assert_contained(error: str, tmp_path: Path) -> None:
    """What :func:`worker_targets`' strategy reported in ``error``: every target denied, nothing written."""
    report = report_in(error)
    for name in ("master_keys", "valkey", "outside", "parent_environ"):
        assert report[name].startswith("denied: "), (name, report[name])
    assert not (tmp_path / "pwned.csv").exists()
