"""deploy/prometheus/alerts.yml: well-formed rules whose expressions name only metrics our services serve.

``promtool check rules`` runs when promtool is installed; either way every metric an expression names
must appear in the ``/metrics`` of a running management server or gateway (or be Prometheus' own ``up``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from management_server.config import ManagementSettings
from management_server.main import create_app as create_management
from tests.enrollment import enroll_settings
from tests.helpers import serve
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app as create_gateway

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_OWN = {"up"}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
DURATION = re.compile(r"^\d+[smhdwy]$")
REQUIRED_ALERTS = {  # what an operator must hear about
    "FreqfleetBotDown",
    "FreqfleetBusLag",
    "FreqfleetDeadLettersGrowing",
    "FreqfleetDrawdownBreach",
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or literals)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        after = text[match.end() :].lstrip()
        if after.startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def served(exposition: str) -> set[str]:
    """Every metric name in a Prometheus text exposition, samples of histograms and counters included."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_rules_are_well_formed() -> None:
    found = rules()
    names = [r["alert"] for r in found]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert set(names) >= REQUIRED_ALERTS
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert "for" not in rule or DURATION.match(rule["for"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    assert yaml.safe_load(PROMETHEUS.read_text())["rule_files"] == ["alerts.yml"]
    assert metric_names('max by (stream, group) (freqfleet_bus_lag_messages{a="b"}) > 5') == {
        "freqfleet_bus_lag_messages"
    }
    assert metric_names("increase(x_total[5m]) > 0 and on (job) time() - y > 60") == {"x_total", "y"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed here")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_every_metric_the_rules_name_is_served(
    management_settings: ManagementSettings, gateway_settings: GatewaySettings
) -> None:
    management = create_management(management_settings)
    await enroll_settings(management_settings.database_url.get_secret_value(), gateway_settings)
    async with (
        serve(management) as management_url,
        serve(create_gateway(gateway_settings)) as gateway_url,
        httpx.AsyncClient(timeout=30) as http,
    ):
        await management.state.metrics_monitor.refresh()
        expositions = [(await http.get(f"{url}/metrics")).text for url in (management_url, gateway_url)]
    available = set().union(*(served(text) for text in expositions)) | PROMETHEUS_OWN
    for rule in rules():
        missing = metric_names(rule["expr"]) - available
        assert not missing, f"{rule['alert']} names metrics no service serves: {sorted(missing)}"
