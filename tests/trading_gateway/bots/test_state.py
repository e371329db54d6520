"""The state file: private, atomic, and a corrupt one never stops the gateway."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.state import BotRecord, Desired, StateFile


def _record(bot_id: str = "bot-a", **process: object) -> BotRecord:
    record = BotRecord(bot_id=bot_id, generation=3, desired=Desired.running, config_path=f"/x/{bot_id}/config.json")
    if process:
        return record.with_process(
            pid=4242,
            create_time=1700000000.25,
            port=18100,
            credentials=ApiCredentials.generate(),
            started_at=datetime.now(UTC),
            freqtrade_version="2026.9",
        )
    return record


def test_records_survive_a_reload_with_their_secrets(tmp_path: Path) -> None:
    path = tmp_path / "gw" / "bots-state.json"
    state = StateFile(path)
    record = _record(process=True)
    state.put(record)
    state.put(_record("bot-b"))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = StateFile(path).get("bot-a")
    assert again == record
    assert again is not None
    assert again.credentials() == record.credentials()
    assert again.create_time == 1700000000.25
    creds = record.credentials()
    assert creds is not None
    assert creds.password in path.read_text()  # the file is where the gateway keeps them
    assert creds.password not in repr(record) + record.model_dump_json()  # and nowhere else
    assert not list(path.parent.glob("*.tmp"))

    state.remove("bot-b")
    assert [r.bot_id for r in StateFile(path).records()] == ["bot-a"]


def test_without_process_drops_credentials_and_counts_a_crash() -> None:
    dead = _record(process=True).without_process(exit_code=-9, error="killed", crashed=True)
    assert (dead.pid, dead.create_time, dead.port, dead.password) == (None, None, None, None)
    assert dead.credentials() is None
    assert (dead.last_exit_code, dead.last_error, len(dead.crash_times)) == (-9, "killed", 1)
    assert dead.desired is Desired.running
    assert dead.generation == 3


def test_a_pending_restart_survives_a_reload_and_ends_with_the_process(tmp_path: Path) -> None:
    path = tmp_path / "bots-state.json"
    StateFile(path).put(_record(process=True).model_copy(update={"restart_pending": True}))
    pending = StateFile(path).get("bot-a")
    assert pending is not None
    assert pending.restart_pending
    assert not pending.without_process(exit_code=0).restart_pending
    # A file written before the field existed loads with no restart pending.
    doc = json.loads(path.read_text())
    del doc["bots"][0]["restart_pending"]
    path.write_text(json.dumps(doc))
    older = StateFile(path).get("bot-a")
    assert older is not None
    assert (older.pid, older.restart_pending) == (4242, False)


def test_a_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "nope.json").records() == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b'{"version": 1, "bots": {}}', b'{"version": 99, "bots": []}', b"[]"],
)
def test_a_corrupt_file_is_set_aside_and_the_state_starts_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bots-state.json"
    path.write_bytes(content)
    state = StateFile(path)
    assert state.records() == []
    aside = list(tmp_path.glob("bots-state.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content  # kept for a person to look at
    assert json.loads(path.read_text()) == {"version": 1, "bots": []}
    state.put(_record())
    assert [r.bot_id for r in StateFile(path).records()] == ["bot-a"]


def test_valid_records_of_a_partly_corrupt_file_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "bots-state.json"
    good = _record(process=True)
    doc = {
        "version": 1,
        "bots": [
            good.model_dump(mode="json", context={"reveal_secrets": True}),
            {"bot_id": "bot-b", "pid": "not a pid"},
        ],
    }
    path.write_text(json.dumps(doc))
    state = StateFile(path)
    assert state.records() == [good]
    assert len(list(tmp_path.glob("bots-state.json.corrupt-*"))) == 1
    assert StateFile(path).records() == [good]  # the rewritten file is clean
    assert len(list(tmp_path.glob("bots-state.json.corrupt-*"))) == 1
