"""The checked-in ``schemas/`` must be exactly what the models generate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from caep.events import EVENT_MODELS
from caep.schemas import DEFAULT_DIRECTORY, SCHEMA_TYPES, generate_schemas, register, write_schemas

REGENERATE = "python -m caep.schemas"


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*.json")}


def test_checked_in_schemas_match_the_models(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    expected, actual = _files(tmp_path), _files(DEFAULT_DIRECTORY)
    missing = sorted(expected.keys() - actual.keys())
    stale = sorted(actual.keys() - expected.keys())
    changed = sorted(n for n in expected.keys() & actual.keys() if expected[n] != actual[n])
    assert not (missing or stale or changed), (
        f"schemas/ is out of date: missing {missing}, not generated {stale}, changed {changed}. "
        f"Run `{REGENERATE}` (and delete files it does not generate)."
    )


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_schemas(first)
    write_schemas(second)
    assert _files(first) == _files(second)
    for text in _files(first).values():
        assert text.endswith(b"}\n")
        assert json.loads(text)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_event_and_the_subject_have_a_schema() -> None:
    names = set(generate_schemas())
    assert "subject.json" in names
    assert {f"events/{uri.rsplit('/', 1)[1]}.json" for uri in EVENT_MODELS} <= names


def test_register_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("subject.json", int)
    assert SCHEMA_TYPES["subject.json"] is not int


def test_module_entry_point_writes_to_a_directory(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "caep.schemas", str(tmp_path)], check=True)
    assert (tmp_path / "subject.json").is_file()
    assert (tmp_path / "events" / "session-revoked.json").is_file()
