"""Where policy picks an action: the declarative policy file and its rule matching.

The file format and the default policy are in `caep/default_policy.toml`. Loading is strict: an
unknown member, action or event name is a `ConfigError` naming where it is.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from caep.decisions import Action
from caep.errors import ConfigError
from caep.events import EVENT_MODELS
from caep.tomlfiles import parse_toml

TIME_EVENTS = frozenset({"elevation-expired", "idle-timeout", "absolute-lifetime"})
ACTIVITY_EVENTS = frozenset({"activity:established", "activity:presented", "activity:ended"})
EVENT_NAMES = frozenset(uri.rsplit("/", 1)[-1] for uri in EVENT_MODELS) | TIME_EVENTS | (
    ACTIVITY_EVENTS)
BANDS = ("low", "medium", "high", "critical")


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"


def event_name(event_type: str) -> str:
    """The short name rules use: the last path segment of a CAEP/RISC/SSF event-type URI."""
    return event_type.rsplit("/", 1)[-1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bands(_Strict):
    medium: float = 25
    high: float = 50
    critical: float = 80

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        if not 0 < self.medium < self.high < self.critical <= 100:
            raise ValueError("bands must satisfy 0 < medium < high < critical <= 100")
        return self


class Weights(_Strict):
    new_device: float = 30
    user_agent_change: float = 45
    ip_change: float = 10
    impossible_travel: float = 60
    idp_risk_low: float = 0
    idp_risk_medium: float = 25
    idp_risk_high: float = 55
    credential_compromise: float = 100
    device_not_compliant: float = 40
    claims_change: float = 5


class Scoring(_Strict):
    half_life_seconds: float = Field(default=1800, gt=0)
    max_travel_speed_kmh: float = Field(default=900, gt=0)
    bands: Bands = Bands()
    weights: Weights = Weights()

    def band(self, score: float) -> str:
        if score >= self.bands.critical:
            return "critical"
        if score >= self.bands.high:
            return "high"
        if score >= self.bands.medium:
            return "medium"
        return "low"


class Lifetimes(_Strict):
    idle_seconds: float = Field(default=3600, gt=0)
    absolute_seconds: float = Field(default=86400, gt=0)
    clock_skew_seconds: float = Field(default=60, ge=0)


class Rule(_Strict):
    name: str = Field(min_length=1)
    on: frozenset[str] | None = None
    band: frozenset[Literal["low", "medium", "high", "critical"]] | None = None
    tenant: frozenset[str] | None = None
    match: dict[str, JsonValue] = Field(default_factory=dict)
    action: Action
    scope: Literal["all", "established_before"] = "all"
    acr: str | None = None
    max_age: int | None = Field(default=None, ge=0)
    flags: dict[str, JsonValue] = Field(default_factory=dict)
    mode: Mode | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        unknown = sorted((self.on or frozenset()) - EVENT_NAMES)
        if unknown:
            raise ValueError(f"unknown event name(s) {unknown}")
        if self.action is Action.STEP_UP and not self.acr:
            raise ValueError("a step_up rule needs `acr`")
        if self.action is Action.SET_FLAGS and not self.flags:
            raise ValueError("a set_flags rule needs `flags`")
        if self.on is None and self.band is None:
            raise ValueError("a rule needs `on` or `band`, or it would fire on everything")
        return self

    def matches(self, name: str, band: str, tenant: str, attributes: Mapping[str, Any]) -> bool:
        if self.on is not None and name not in self.on:
            return False
        if self.band is not None and band not in self.band:
            return False
        if self.tenant is not None and tenant not in self.tenant:
            return False
        return all(attributes.get(key) == value for key, value in self.match.items())


class Policy(_Strict):
    """A whole policy file."""

    mode: Mode = Mode.ENFORCE
    scoring: Scoring = Scoring()
    lifetimes: Lifetimes = Lifetimes()
    flags: dict[str, JsonValue] = Field(default_factory=dict)
    security_flags: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Flags that fail closed in relying services, with their safe value.")
    rule: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        names = [rule.name for rule in self.rule]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {duplicates}")
        undeclared = sorted({k for r in self.rule for k in r.flags} - set(self.flags))
        if undeclared:
            raise ValueError(f"flags {undeclared} are set by rules but have no default in [flags]")
        for key, safe in self.security_flags.items():
            if key not in self.flags:
                raise ValueError(f"security flag {key!r} has no default in [flags]")
            if not _same_json_type(self.flags[key], safe):
                raise ValueError(f"security flag {key!r}: the safe value {safe!r} is not of the "
                                 f"type of its default {self.flags[key]!r}")
        return self

    def enforced(self, rule: Rule) -> bool:
        return (rule.mode or self.mode) is Mode.ENFORCE


def json_type(value: object) -> str:
    """The JSON type of a flag value; an integer counts as a number too (see `_same_json_type`)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _same_json_type(default: object, value: object) -> bool:
    kinds = {json_type(default), json_type(value)}
    return len(kinds) == 1 or kinds == {"integer", "number"}


def parse_policy(text: str, origin: str = "policy") -> Policy:
    return parse_toml(text, Policy, origin, max_problems=5)


def default_policy_text() -> str:
    return resources.files("caep").joinpath("default_policy.toml").read_text(encoding="utf-8")


@functools.cache
def _default_policy() -> Policy:
    return parse_policy(default_policy_text(), "default policy")


def load_policy(path: Path | None = None) -> Policy:
    """The policy file at `path`, or the documented default policy (parsed once)."""
    if path is None:
        return _default_policy()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"policy file {path} is not UTF-8") from None
    return parse_policy(text, f"policy file {path}")
