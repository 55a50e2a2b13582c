"""Which decision offsets the edge may commit: only those whose SETs are settled.

A decision record turns into zero or more SETs (one per stream that wants it). Its offset is
settled once every one of them is: pushed (or given up after the retries), acknowledged or
rejected by a poll receiver, or dropped by a status or bound. The committable position of a
partition is its lowest unsettled offset (or the next offset when nothing is pending), so a
restarted edge reads again exactly the decisions whose SETs may not have arrived, and sends
them again with the same `jti`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class OffsetTracker:
    pending: dict[Hashable, dict[int, int]] = field(default_factory=dict)
    next_offset: dict[Hashable, int] = field(default_factory=dict)

    def seen(self, partition: Hashable, offset: int, outstanding: int) -> None:
        """A record was read and queued `outstanding` SETs."""
        self.next_offset[partition] = max(self.next_offset.get(partition, 0), offset + 1)
        if outstanding > 0:
            counts = self.pending.setdefault(partition, {})
            counts[offset] = counts.get(offset, 0) + outstanding

    def settled(self, partition: Hashable, offset: int) -> None:
        """One SET of that record is settled (unknown references are ignored)."""
        counts = self.pending.get(partition)
        if counts is None or offset not in counts:
            return
        counts[offset] -= 1
        if counts[offset] <= 0:
            del counts[offset]

    def committable(self) -> dict[Hashable, int]:
        """Per partition, the offset a consumer may commit now."""
        result = {}
        for partition, after in self.next_offset.items():
            counts = self.pending.get(partition)
            result[partition] = min(counts) if counts else after
        return result

    def outstanding(self) -> int:
        return sum(sum(counts.values()) for counts in self.pending.values())
