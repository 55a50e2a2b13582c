"""README says only what runs: its settings table and REPL example are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from caep.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(CAEP_[A-Z_]+)` \| ([^|]+) \|", README, re.MULTILINE))
    expected = {}
    for name, field in Settings.model_fields.items():
        default = field.default
        expected[f"CAEP_{name.upper()}"] = "unset" if default is None else f"`{default}`"
    assert {k: v.strip() for k, v in rows.items()} == expected


def test_set_up_shows_exactly_the_two_commands_first() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


def test_repl_example_runs_without_a_broker() -> None:
    block = re.search(r"```python\n(.*?)```", README, re.DOTALL)
    assert block is not None
    lines = block.group(1).splitlines()
    namespace: dict[str, Any] = {}
    exec("\n".join(lines[:-1]), namespace)
    decisions = eval(lines[-1], namespace)
    assert [d.action for d in decisions] == ["revoke_subject"]
