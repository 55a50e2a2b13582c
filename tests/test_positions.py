"""The consumer's record order guard (streams/positions.py): what it delivers, drops, rewinds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.positions import Positions, Verdict

DELIVER, DROP, REWIND = Verdict.DELIVER, Verdict.DROP, Verdict.REWIND


def test_a_batch_fetched_before_the_seek_is_not_delivered_after_it() -> None:
    """The chaos test's lost revocation: 250-400 fetched and queued, a rebalance rewinds the
    partition to its committed 250, then the stale 401 arrives. faust took it as a hole in
    the log and committed past 250-400; the guard asks for 250 again."""
    positions: Positions[str] = Positions()
    positions.seeked({"p": 250})
    assert [positions.verdict("p", o) for o in (250, 251)] == [DELIVER, DELIVER]
    positions.revoked(["p"])
    assert positions.verdict("p", 252) is DROP  # fetched before the rebalance
    assert positions.expected("p") is None
    positions.seeked({"p": 250})
    assert positions.verdict("p", 401) is REWIND
    assert positions.expected("p") == 250
    assert positions.verdict("p", 402) is REWIND  # still stale until the rewind lands
    assert [positions.verdict("p", o) for o in (250, 251, 252)] == [DELIVER] * 3
    assert positions.verdict("p", 251) is DROP  # already delivered
    assert positions.expected("p") == 253


def test_an_unknown_position_takes_the_next_record_and_partitions_are_apart() -> None:
    positions: Positions[str] = Positions()
    assert positions.verdict("a", 7) is DELIVER
    positions.seeked({"b": 3, "a": None})
    assert positions.verdict("a", 100) is DELIVER
    assert positions.verdict("b", 4) is REWIND
    assert positions.verdict("a", 101) is DELIVER


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=200),
       st.integers(min_value=0, max_value=30))
def test_whatever_arrives_the_delivered_offsets_are_consecutive_from_the_seek(
        arrivals: list[int], start: int) -> None:
    positions: Positions[str] = Positions()
    positions.seeked({"p": start})
    delivered = [o for o in arrivals if positions.verdict("p", o) is DELIVER]
    assert delivered == list(range(start, start + len(delivered)))


def test_a_rewind_overtaken_by_a_rebalance_does_not_land() -> None:
    """A rewind decided at 300 awaits its seek; meanwhile a rebalance revokes the partition
    and seeks it to the committed 250. Landing at 300 would drop 250-299 as delivered."""
    positions: Positions[str] = Positions()
    positions.seeked({"p": 300})
    mark = positions.mark("p")
    positions.revoked(["p"])
    positions.seeked({"p": 250})
    assert not positions.current("p", mark)
    assert not positions.rewound("p", 300, mark)
    assert positions.expected("p") == 250
    assert positions.verdict("p", 250) is DELIVER


def test_a_rewind_lands_when_nothing_moved_the_partition() -> None:
    positions: Positions[str] = Positions()
    positions.seeked({"p": 10, "q": 5})
    assert positions.verdict("p", 40) is REWIND
    mark = positions.mark("p")
    positions.seeked({"q": 9})  # another partition's seek does not matter
    positions.revoked(["r"])
    assert positions.rewound("p", 10, mark)
    assert not positions.rewound("p", 10, mark)  # the landed rewind is a move of its own
    assert [positions.verdict("p", o) for o in (11, 10, 11)] == [REWIND, DELIVER, DELIVER]
