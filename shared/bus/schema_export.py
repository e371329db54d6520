"""Export the bus's JSON Schemas to ``docs/events/`` (``python -m shared.bus.schema_export``).

One file per message type plus ``index.json`` (every type, its kind and file), for
integrations that read the streams. ``tests/shared/bus/test_schemas.py`` fails when the
files and the code differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.bus.messages import COMMAND_TYPES, EVENT_TYPES, SCHEMA_VERSION, Envelope

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "events"


def schema_of(cls: type[Envelope]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render() -> dict[str, str]:
    """File name → content, for every file under docs/events/."""
    files: dict[str, str] = {}
    index: list[dict[str, str | int]] = []
    for cls in (*COMMAND_TYPES, *EVENT_TYPES):
        name = str(cls.model_fields["type"].default)
        files[f"{name}.json"] = json.dumps(schema_of(cls), indent=2, sort_keys=True) + "\n"
        index.append({"type": name, "kind": cls.kind, "schema_version": SCHEMA_VERSION, "file": f"{name}.json"})
    files["index.json"] = json.dumps({"messages": index}, indent=2) + "\n"
    return files


def export(directory: Path = DEFAULT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render().items():
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    for path in export(target):
        print(path)
