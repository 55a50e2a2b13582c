"""Which streams an event goes to: SSF §8.1.3.1 subject matching and the stream's filters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caep.ssf.models import StreamRecord


def subjects_match(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """SSF §8.1.3.1: simple subjects match when identical; complex subjects match when every
    member either one of them lacks, or both have identically."""
    if first.get("format") == "complex" and second.get("format") == "complex":
        members = (set(first) | set(second)) - {"format"}
        return all(name not in first or name not in second or first[name] == second[name]
                   for name in members)
    return dict(first) == dict(second)


def _listed(subject: Mapping[str, Any], subjects: list[Any]) -> bool:
    return any(subjects_match(subject, listed) for listed in subjects)


def wants_subject(record: StreamRecord, subject: Mapping[str, Any], default_all: bool) -> bool:
    """With default subjects ALL (the CAEP interoperability profile: receivers assume every
    subject is included) a removed subject is excluded unless added again; with NONE only
    added subjects are included."""
    if _listed(subject, record.subjects_added):
        return True
    return default_all and not _listed(subject, record.subjects_removed)


def wants(record: StreamRecord, event_type: str, subject: Mapping[str, Any], *,
          default_all: bool = True) -> bool:
    """Whether an event of this type about this subject is delivered on the stream."""
    return (event_type in record.config.events_delivered
            and wants_subject(record, subject, default_all))


def add_subject(record: StreamRecord, subject: dict[str, Any], now: float) -> StreamRecord:
    added = [s for s in record.subjects_added if s != subject] + [subject]
    removed = [s for s in record.subjects_removed if s != subject]
    return record.model_copy(update={"subjects_added": added, "subjects_removed": removed,
                                     "updated_at": now})


def remove_subject(record: StreamRecord, subject: dict[str, Any], now: float) -> StreamRecord:
    added = [s for s in record.subjects_added if s != subject]
    removed = [s for s in record.subjects_removed if s != subject] + [subject]
    return record.model_copy(update={"subjects_added": added, "subjects_removed": removed,
                                     "updated_at": now})
