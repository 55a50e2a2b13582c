"""RFC 8936 poll semantics for one stream, without I/O or clocks of its own.

SETs wait in arrival order (so one subject's SETs keep their order). A poll hands out at most
`maxEvents` of them; each stays outstanding until the receiver acknowledges it (`ack`) or
reports it rejected (`setErrs`, RFC 8936 §2.4); an outstanding SET not settled within
`redeliver_after` seconds is handed out again, ahead of newer ones, at most
`max_deliveries` times in all (RFC 8936 §2.4 lets a transmitter limit its attempts); then it
is abandoned. Bounded: beyond `max_held` SETs the oldest waiting one is dropped (and counted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

DEFAULT_MAX_EVENTS = 100
DEFAULT_MAX_DELIVERIES = 10


@dataclass
class PollQueue:
    max_held: int
    redeliver_after: float
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    waiting: OrderedDict[str, str] = field(default_factory=OrderedDict)
    outstanding: OrderedDict[str, tuple[str, float, int]] = field(default_factory=OrderedDict)
    rejected: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    abandoned: list[str] = field(default_factory=list)
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.waiting) + len(self.outstanding)

    def offer(self, jti: str, token: str) -> list[str]:
        """Queue a SET; a jti already queued or outstanding is not queued twice. Returns the
        jtis dropped to stay within `max_held` (the oldest waiting ones)."""
        if jti in self.waiting or jti in self.outstanding:
            return [jti]
        self.waiting[jti] = token
        dropped = []
        while len(self) > self.max_held and self.waiting:
            dropped.append(self.waiting.popitem(last=False)[0])
            self.dropped += 1
        return dropped

    def settle(self, acks: list[str], errors: dict[str, tuple[str, str | None]]) -> list[str]:
        """Forget acknowledged and rejected SETs (a jti not queued is ignored); returns the
        jtis forgotten."""
        settled = []
        for jti in acks:
            if self.outstanding.pop(jti, None) is not None or \
                    self.waiting.pop(jti, None) is not None:
                settled.append(jti)
        for jti, error in errors.items():
            if self.outstanding.pop(jti, None) is not None or \
                    self.waiting.pop(jti, None) is not None:
                self.rejected[jti] = error
                settled.append(jti)
        return settled

    def due(self, now: float) -> list[str]:
        return [jti for jti, (_, sent, _count) in self.outstanding.items()
                if now - sent >= self.redeliver_after]

    def available(self, now: float, redeliver: bool = True) -> int:
        return (len(self.due(now)) if redeliver else 0) + len(self.waiting)

    def take(self, max_events: int | None, now: float,
             redeliver: bool = True) -> tuple[dict[str, str], bool]:
        """Up to `max_events` SETs (redeliveries first) and whether more are available.
        `redeliver=False` (a paused stream, SSF §8.1.2.1: nothing is transmitted) hands out
        only what is waiting, and leaves what was handed out before to wait for the ack."""
        limit = DEFAULT_MAX_EVENTS if max_events is None else max_events
        taken: dict[str, str] = {}
        for jti in self.due(now) if redeliver else ():
            if len(taken) >= limit:
                break
            token, _, count = self.outstanding.pop(jti)
            if count >= self.max_deliveries:
                self.abandoned.append(jti)
                continue
            self.outstanding[jti] = (token, now, count + 1)
            taken[jti] = token
        while self.waiting and len(taken) < limit:
            jti, token = self.waiting.popitem(last=False)
            self.outstanding[jti] = (token, now, 1)
            taken[jti] = token
        return taken, self.available(now, redeliver) > 0

    def drain_abandoned(self) -> list[str]:
        """The jtis given up since the last call."""
        abandoned, self.abandoned = self.abandoned, []
        return abandoned

    def withdraw(self) -> list[tuple[str, str]]:
        """Take back every SET not handed out yet (a stream being paused), oldest first."""
        withdrawn = list(self.waiting.items())
        self.waiting.clear()
        return withdrawn

    def clear(self) -> list[str]:
        """A disabled stream holds nothing; returns the jtis dropped."""
        dropped = [*self.waiting, *self.outstanding]
        self.waiting.clear()
        self.outstanding.clear()
        return dropped
