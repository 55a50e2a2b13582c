"""Which (`iss`, `jti`) pairs the engine already took in, so a redelivered SET applies once.

RFC 8417 makes `jti` unique per issuer, so a second SET with a known pair is a redelivery
(an identity provider's retry, a poll answer repeated, a record produced twice) and is dropped
before evaluation. The pairs live in a stream processor's table, recovered from its changelog;
this module is the part of that needs no broker: the key of a pair, and which remembered pairs
have outlived the replay window and may be forgotten, partition by partition (a table entry
can only be deleted while processing a record of the partition it was written from).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import orjson

from caep import jsonbytes


def replay_key(iss: str, jti: str) -> bytes:
    """The table key of a pair: unambiguous whatever characters `iss` and `jti` hold."""
    return jsonbytes.dumps([iss, jti])


@dataclass(frozen=True)
class Seen:
    """What the table holds for a pair: when it was taken in, and from which partition."""

    at: float
    partition: int

    def to_bytes(self) -> bytes:
        return jsonbytes.dumps({"at": self.at, "p": self.partition})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Seen:
        data = orjson.loads(raw)
        return cls(at=float(data["at"]), partition=int(data["p"]))


class ExpiryIndex:
    """Remembered pairs in the order they were taken in, per partition, so forgetting the
    expired ones costs nothing per record when none is due."""

    def __init__(self, window: float) -> None:
        if window <= 0:
            raise ValueError("the replay window must be positive")
        self.window = window
        self._queues: dict[int, deque[tuple[float, bytes]]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def add(self, key: bytes, seen: Seen) -> None:
        """Index a pair. Pairs of one partition must be added in the order they were seen;
        `rebuild` restores that order from a table."""
        self._queues.setdefault(seen.partition, deque()).append((seen.at, key))

    def due(self, partition: int, now: float) -> list[bytes]:
        """Remove and return the keys of `partition` seen at or before `now - window`."""
        queue = self._queues.get(partition)
        if not queue:
            return []
        horizon = now - self.window
        expired = []
        while queue and queue[0][0] <= horizon:
            expired.append(queue.popleft()[1])
        return expired

    def rebuild(self, entries: list[tuple[bytes, Seen]]) -> None:
        """Start over from a table's contents (after recovery: partitions may have moved)."""
        self._queues.clear()
        for key, seen in sorted(entries, key=lambda entry: entry[1].at):
            self.add(key, seen)
