"""The static checks of a strategy's source, with the line of each problem."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from management_server.strategies.validation import MAX_PROBLEMS, MAX_SOURCE_BYTES, validate_strategy
from tests.management_server.conftest import Management

ALWAYS_ENTER = (Path(__file__).parents[2] / "exchange_simulator" / "strategies" / "AlwaysEnter.py").read_text()
SAMPLE = Path(__file__).parents[3] / ".venv/lib/python3.11/site-packages/freqtrade/templates/sample_strategy.py"


def test_real_strategies_pass() -> None:
    assert validate_strategy(ALWAYS_ENTER).ok
    if SAMPLE.exists():  # freqtrade's own sample strategy, as shipped with the pinned version
        result = validate_strategy(SAMPLE.read_text())
        assert result.ok, result.problems
        assert result.class_name == "SampleStrategy"


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (lambda s: "import os\n" + s, 1, "importing 'os' is not allowed in a strategy"),
        (lambda s: "from subprocess import run\n" + s, 1, "importing from 'subprocess' is not allowed"),
        (lambda s: "import importlib.util\n" + s, 1, "importing 'importlib.util' is not allowed"),
        (lambda s: s + "\nX = eval('1')\n", None, "calling eval() is not allowed"),
        (lambda s: s + "\nopen('/etc/passwd')\n", None, "calling open() is not allowed"),
        (lambda s: s + "\nf = __import__\n", None, "using '__import__' is not allowed"),
        (lambda s: s + "\ny = ().__class__.__bases__\n", None, "accessing .__bases__ is not allowed"),
        (lambda s: s.replace("INTERFACE_VERSION = 3", "INTERFACE_VERSION = 2"), None, "needs INTERFACE_VERSION = 3"),
        (lambda s: s.replace("def populate_exit_trend", "def other"), None, "must define populate_exit_trend()"),
        (lambda s: s.replace("(IStrategy)", "(object)"), 1, "no strategy class"),
        (lambda s: s + "\nclass Second(IStrategy):\n    pass\n", None, "one IStrategy subclass per file"),
        (lambda s: s + "\ndef broken(:\n", None, "syntax error"),
    ],
)
def test_problems_are_found_with_their_line(change: object, line: int | None, message: str) -> None:
    source = change(ALWAYS_ENTER)  # type: ignore[operator]
    result = validate_strategy(source)
    assert not result.ok
    problem = next(p for p in result.problems if message in p.message)
    expected_line = line or next(i for i, text in enumerate(source.splitlines(), 1) if _marker(message) in text)
    assert problem.line == expected_line


def _marker(message: str) -> str:
    for key, marker in {
        "eval": "eval(",
        "open()": "open(",
        "__import__": "__import__",
        "__bases__": "__bases__",
        "INTERFACE_VERSION": "class AlwaysEnter",
        "populate_exit_trend": "class AlwaysEnter",
        "one IStrategy": "class Second",
        "syntax": "def broken",
    }.items():
        if key in message:
            return marker
    raise AssertionError(message)


def test_an_oversized_source_is_refused() -> None:
    result = validate_strategy(ALWAYS_ENTER + "#" * 300_000)
    assert [p.message for p in result.problems] == ["the source is larger than 256 KiB"]


def test_the_example_strategy_shipped_for_the_readme_passes() -> None:
    example = Path(__file__).parents[3] / "examples" / "strategies" / "GreenCandle.py"
    result = validate_strategy(example.read_text())
    assert result.ok, result.problems
    assert result.class_name == "GreenCandle"


ADVERSARIAL = [
    "x = " + "(" * 200_000 + ")" * 200_000,  # nested too deeply for the parser
    "-" * 100_000 + "1",  # a MemoryError in the parser on some builds
    "\n".join(f"e{i} = eval" for i in range(20_000)),  # was quadratic: one walk of the tree per name
    "x = [" + ",".join("a.b" for _ in range(60_000)) + "]",  # many nodes
    "a\x00b",  # not text Python can read
]


@pytest.mark.parametrize("source", ADVERSARIAL, ids=["deep", "minus", "eval-names", "many-nodes", "nul"])
def test_adversarial_sources_are_findings_not_crashes(source: str) -> None:
    """Each is a finding (how long it takes is measured by bench/lint.py, not here)."""
    result = validate_strategy(source[:MAX_SOURCE_BYTES])
    assert not result.ok
    assert 1 <= len(result.problems) <= MAX_PROBLEMS + 5  # the cap, its note, and the class checks


async def test_the_lint_runs_off_the_event_loop(management: Management) -> None:
    """256 KiB of adversarial source: answered with a 400 and its findings, while /health/live keeps answering."""
    await management.client.post(
        "/api/v1/auth/register", json={"email": "lint@example.com", "password": "a long enough password 1"}
    )
    token = (await management.login("lint@example.com", "a long enough password 1"))["access_token"]
    source = ("\n".join(f"e{i} = eval" for i in range(40_000)))[:MAX_SOURCE_BYTES]
    upload = asyncio.create_task(
        management.client.post(
            "/api/v1/strategies",
            json={"name": "adversarial", "source": source},
            headers={"Authorization": f"Bearer {token}"},
        )
    )
    lives = 0
    while not upload.done():
        live = await management.client.get("/health/live", timeout=2)
        assert live.status_code == 200
        lives += 1
    response = await upload
    assert response.status_code == 400, response.text
    assert "not allowed" in response.text
    assert lives >= 1
