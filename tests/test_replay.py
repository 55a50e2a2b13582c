"""The replay bookkeeping (`caep.replay`): pair keys, forgetting pairs past the window, and
the exactly-sized JSON bytes that tables keep (`caep.jsonbytes`)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from caep import jsonbytes
from caep.replay import ExpiryIndex, Seen, replay_key


@given(st.text(), st.text(), st.text(), st.text())
def test_two_pairs_share_a_key_only_if_they_are_the_same_pair(
        iss: str, jti: str, other_iss: str, other_jti: str) -> None:
    same = replay_key(iss, jti) == replay_key(other_iss, other_jti)
    assert same == ((iss, jti) == (other_iss, other_jti))


def test_separator_characters_cannot_make_two_pairs_collide() -> None:
    assert replay_key("https://a|b", "c") != replay_key("https://a", "b|c")
    assert replay_key('a","b', "c") != replay_key("a", 'b","c')


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.integers(0, 1023))
def test_seen_round_trips(at: float, partition: int) -> None:
    seen = Seen(at=at, partition=partition)
    assert Seen.from_bytes(seen.to_bytes()) == seen


def test_pairs_are_forgotten_once_the_window_has_passed_and_not_before() -> None:
    index = ExpiryIndex(window=100.0)
    index.add(b"a", Seen(at=10.0, partition=0))
    index.add(b"b", Seen(at=20.0, partition=0))
    index.add(b"c", Seen(at=15.0, partition=1))
    assert index.due(0, now=109.9) == []
    assert index.due(0, now=110.0) == [b"a"]
    assert index.due(0, now=110.0) == [], "a forgotten pair is returned once"
    assert len(index) == 2
    assert index.due(0, now=1000.0) == [b"b"], "only the partition asked about"
    assert index.due(1, now=1000.0) == [b"c"]
    assert index.due(7, now=1000.0) == []
    assert len(index) == 0


@given(st.lists(st.tuples(st.floats(0, 1000), st.integers(0, 3)), max_size=60),
       st.floats(1, 500), st.floats(0, 2000))
def test_rebuild_forgets_exactly_what_is_older_than_the_window(
        entries: list[tuple[float, int]], window: float, now: float) -> None:
    index = ExpiryIndex(window)
    table = [(str(i).encode(), Seen(at=at, partition=p)) for i, (at, p) in enumerate(entries)]
    index.rebuild(table)
    assert len(index) == len(table)
    forgotten = {key for partition in range(4) for key in index.due(partition, now)}
    assert forgotten == {key for key, seen in table if seen.at <= now - window}
    assert len(index) == len(table) - len(forgotten)


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ExpiryIndex(0)


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_kept_json_bytes_are_orjson_bytes(value: object) -> None:
    assert jsonbytes.dumps(value) == orjson.dumps(value)
