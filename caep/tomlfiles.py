"""The project's TOML files (trust file, edge file, policy) read into their pydantic models, so
every one of them refuses bad input with the same kind of one-line `ConfigError`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from caep.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def parse_toml(text: str, model: type[Model], origin: str, *,
               max_problems: int | None = None) -> Model:
    """`text` as `model`; `origin` names the input in the error (deep nesting included: tomllib
    and pydantic both recurse)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{origin} nests too deeply") from None
    try:
        return model.model_validate(raw)
    except RecursionError:
        raise ConfigError(f"{origin} nests too deeply") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()[:max_problems])
        raise ConfigError(f"{origin}: {problems}") from None


def load_toml(path: Path, model: type[Model], what: str) -> Model:
    """The file at `path` as `model`; `what` says which file it is ("trust file")."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    return parse_toml(text, model, f"{what} {path}")
