"""JSON Schemas generated from the models, checked in under ``schemas/`` for non-Python consumers.

Regenerate with ``python -m caep.schemas [DIR]`` (default: the repository's ``schemas/``). To
publish another model, add ``"<relative path>.json": <model or type>`` to :data:`SCHEMA_TYPES`
(or call :func:`register` from a module imported here); output is sorted and byte-stable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from caep.activity import SessionActivity
from caep.decisions import Decision, SessionFlags
from caep.events import EVENT_MODELS, UnrecognizedEvent
from caep.policy import Policy
from caep.ssf.models import StreamRecord
from caep.subjects import Subject

DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "schemas"

SCHEMA_TYPES: dict[str, Any] = {
    "subject.json": Subject,
    **{f"events/{uri.rsplit('/', 1)[1]}.json": model for uri, model in EVENT_MODELS.items()},
    "events/unrecognized.json": UnrecognizedEvent,
    "topics/session-activity.json": SessionActivity,
    "topics/decision.json": Decision,
    "topics/flags.json": SessionFlags,
    "policy.json": Policy,
    "topics/ssf-stream.json": StreamRecord,
}
"""Relative file name -> anything pydantic can build a ``TypeAdapter`` for."""


def register(filename: str, tp: Any) -> None:
    """Publish ``tp``'s schema as ``filename``; a name may be taken only once."""
    if filename in SCHEMA_TYPES:
        raise ValueError(f"schema file {filename!r} is already registered")
    SCHEMA_TYPES[filename] = tp


def generate_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12) for every registered type."""
    schemas: dict[str, dict[str, Any]] = {}
    for filename, tp in sorted(SCHEMA_TYPES.items()):
        schema = TypeAdapter[Any](tp).json_schema()
        schema.setdefault("title", Path(filename).stem)
        schemas[filename] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return schemas


def render(schema: dict[str, Any]) -> str:
    """The byte-stable text of one schema file: sorted keys, 2-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema under ``directory``; returns the paths written, sorted."""
    written = []
    for filename, schema in generate_schemas().items():
        path = directory / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    """``python -m caep.schemas [DIR]``."""
    directory = Path(argv[0]) if argv else DEFAULT_DIRECTORY
    for path in write_schemas(directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
