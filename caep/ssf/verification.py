"""Receiver side of SSF §8.1.4: which verification `state`s were requested, and whether a
verification SET that arrives is one of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from caep.ssf.mapping import VERIFICATION

INVALID_STATE = "invalid_state"


def configuration_url(issuer: str) -> str:
    """SSF §7.2: `/.well-known/ssf-configuration` goes between the host and the issuer's
    path (a terminating `/` of the path removed)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, f"/.well-known/ssf-configuration{path}",
                       "", ""))


@dataclass
class VerificationTracker:
    """Requested states per stream, and the ones confirmed by a verification SET."""

    expected: dict[str, set[str]] = field(default_factory=dict)
    confirmed: dict[str, set[str]] = field(default_factory=dict)

    def expect(self, stream_id: str, state: str) -> None:
        self.expected.setdefault(stream_id, set()).add(state)

    @staticmethod
    def _verification(claims: dict[str, Any]) -> tuple[str | None, str] | None:
        """(stream id, state) of a verification SET that carries a state, else None."""
        events = claims.get("events")
        if not isinstance(events, dict) or VERIFICATION not in events:
            return None
        payload = events[VERIFICATION]
        state = payload.get("state") if isinstance(payload, dict) else None
        if not isinstance(state, str):
            return None  # a transmitter-initiated verification carries no state
        sub_id = claims.get("sub_id")
        stream_id = sub_id.get("id") if isinstance(sub_id, dict) else None
        return (stream_id if isinstance(stream_id, str) else None), state

    def check(self, claims: dict[str, Any]) -> str | None:
        """`invalid_state` (SSF §8.1.4.1) for a verification SET whose state was never
        requested, else None. Changes nothing: `confirm` once the SET is kept. A state
        already confirmed is accepted again (the transmitter may redeliver)."""
        found = self._verification(claims)
        if found is None:
            return None
        stream_id, state = found
        known = self.expected.get(stream_id or "", set()) | self.confirmed.get(
            stream_id or "", set())
        return None if state in known else INVALID_STATE

    def confirm(self, claims: dict[str, Any]) -> None:
        found = self._verification(claims)
        if found is None:
            return
        stream_id, state = found
        if stream_id is None:
            return
        self.expected.get(stream_id, set()).discard(state)
        self.confirmed.setdefault(stream_id, set()).add(state)

    def is_confirmed(self, stream_id: str, state: str) -> bool:
        return state in self.confirmed.get(stream_id, set())
