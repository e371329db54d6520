"""The README's two MCP client examples run as written (token and port aside) against a real stack."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.trading_gateway.mcp.conftest import Stack

pytestmark = pytest.mark.slow  # two Python processes start (the examples)

README = Path(__file__).resolve().parents[3] / "README.md"


async def test_the_readmes_mcp_examples_run(stack: Stack, tmp_path: Path) -> None:
    login = await stack.account("alice@example.com")
    bot_id = await stack.bot(login, "readme-bot")
    token = await stack.pat(login, ["read", "trade"], name="my-agent")
    text = README.read_text()
    section = text[text.index("## AI agents (MCP)") : text.index("## The bus")]
    examples = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(examples) == 2
    port = stack.gateway_url.rsplit(":", 1)[1]
    outputs = []
    for i, example in enumerate(examples):
        assert '"eyJ..."' in example
        assert "127.0.0.1:8001" in example
        script = tmp_path / f"agent{i}.py"
        script.write_text(example.replace('"eyJ..."', repr(token)).replace("127.0.0.1:8001", f"127.0.0.1:{port}"))
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()[-3000:]
        outputs.append(out.decode())
    sdk, raw = outputs
    assert f"{bot_id} readme-bot stopped stopped" in sdk
    assert "True The bot is not running: start it first." in sdk
    assert "'name': 'freqfleet-gateway'" in raw
    assert bot_id in raw
