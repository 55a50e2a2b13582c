"""The next offset each input partition must hand its stream, so no record is skipped.

faust's fetcher can deliver records fetched before a seek after it: around a rebalance a
worker that keeps a partition is rewound to the committed offset, but a batch that was
already fetched (further on) can still be handed over afterwards. faust takes the jump for
a hole in the log, marks the records in between as handled, commits past them, and drops
them when they are fetched again: records lost without a trace (found by the chaos test: a
revocation never decided while every offset was committed). The transport asks `verdict`
for every record and only delivers the one that comes next; anything else is dropped and,
when it is ahead, the partition is rewound to the record that should come next.

A rewind takes awaits (the earliest offset, the seek itself), and a rebalance can revoke and
re-seek the partition in between; the rewind's offset is then stale, and setting it would put
the expected offset past records the rebalance's seek reads again, which would be dropped as
"already delivered". Every seek and revocation marks the partition (`mark`), and a rewind
lands only if the mark it started from is still there (`rewound`).

Pure bookkeeping, no I/O: the transport does the seeking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Generic, TypeVar

_TP = TypeVar("_TP")


class Verdict(Enum):
    DELIVER = "deliver"
    DROP = "drop"  # already delivered, or the partition waits for its seek
    REWIND = "rewind"  # ahead of what comes next: seek back to `expected`


_BLOCKED = -1


class Positions(Generic[_TP]):
    """Per partition: the offset the stream gets next, or blocked until the next seek."""

    def __init__(self) -> None:
        self._next: dict[_TP, int] = {}
        self._marks: dict[_TP, int] = {}

    def seeked(self, offsets: Mapping[_TP, int | None]) -> None:
        """The partitions were positioned here; None: unknown, take the next record as is."""
        for tp, offset in offsets.items():
            self._marks[tp] = self._marks.get(tp, 0) + 1
            if offset is None:
                self._next.pop(tp, None)
            else:
                self._next[tp] = offset

    def revoked(self, tps: Iterable[_TP]) -> None:
        """Records of these partitions fetched before the rebalance are stale until a seek."""
        for tp in tps:
            self._marks[tp] = self._marks.get(tp, 0) + 1
            self._next[tp] = _BLOCKED

    def mark(self, tp: _TP) -> int:
        """Changes with every seek and revocation of `tp`: what a rewind starts from."""
        return self._marks.get(tp, 0)

    def current(self, tp: _TP, mark: int) -> bool:
        """No seek or revocation of `tp` since `mark` was taken."""
        return self._marks.get(tp, 0) == mark

    def rewound(self, tp: _TP, offset: int, mark: int) -> bool:
        """A rewind to `offset` decided at `mark` landed: it counts only if nothing moved the
        partition since (a rebalance's seek wins over it)."""
        if not self.current(tp, mark):
            return False
        self.seeked({tp: offset})
        return True

    def expected(self, tp: _TP) -> int | None:
        offset = self._next.get(tp)
        return None if offset is None or offset == _BLOCKED else offset

    def verdict(self, tp: _TP, offset: int) -> Verdict:
        want = self._next.get(tp)
        if want == _BLOCKED:
            return Verdict.DROP
        if want is None or offset == want:
            self._next[tp] = offset + 1
            return Verdict.DELIVER
        return Verdict.DROP if offset < want else Verdict.REWIND
