"""The KV state machine on its own: what exactly-once means per request, and what a snapshot must refuse.

The simulation and the lab ports reach this code only through the whole
service, where a wrong answer to an older duplicate or a half-checked
snapshot goes unseen (the library mutation campaign showed both surviving).
"""

from __future__ import annotations

import pickle

import pytest

from apps.kvraft.state import KVState
from apps.kvsrv.messages import Append, Put


def _append(client: int, seq: int, key: str, value: str) -> Append:
    return Append(key=key, value=value, client=client, seq=seq)


def _put(client: int, seq: int, key: str, value: str) -> Put:
    return Put(key=key, value=value, client=client, seq=seq)


def test_an_append_answers_the_old_value_and_a_put_answers_nothing() -> None:
    state = KVState()
    assert state.apply(_put(1, 1, "k", "a")) is None
    assert state.apply(_append(1, 2, "k", "b")) == "a"
    assert state.apply(_append(2, 1, "fresh", "x")) == ""
    assert (state.get("k"), state.get("fresh"), state.get("missing")) == ("ab", "x", "")


def test_a_retried_request_is_answered_from_the_table_and_applied_once() -> None:
    state = KVState()
    assert state.apply(_append(1, 1, "k", "a")) == ""
    assert state.apply(_append(1, 2, "k", "b")) == "a"
    assert state.apply(_append(1, 2, "k", "b")) == "a"  # the latest again: its own reply
    assert state.get("k") == "ab"
    assert state.duplicate(1, 2) == (True, "a")
    # An older request is known too, but its reply was not kept: a clerk has one request out at a time.
    assert state.duplicate(1, 1) == (True, None)
    assert state.apply(_append(1, 1, "k", "a")) is None and state.get("k") == "ab"
    assert state.duplicate(1, 3) == (False, None) and state.duplicate(7, 1) == (False, None)
    assert state.apply(_put(1, 3, "k", "z")) is None and state.duplicate(1, 3) == (True, None)


def test_a_snapshot_carries_the_data_and_the_duplicate_table() -> None:
    state = KVState()
    state.apply(_append(1, 1, "k", "a"))
    state.apply(_put(2, 5, "j", "b"))
    copy = KVState.restore(state.snapshot())
    assert copy == state and copy.digest() == state.digest()
    assert copy.apply(_append(1, 1, "k", "a")) == "" and copy.get("k") == "a"  # still a duplicate after restore
    copy.apply(_append(1, 2, "k", "c"))
    assert copy != state and copy != "not a state"


@pytest.mark.parametrize("blob", [({}, []), ([], {}), ("", ""), (None, {})])
def test_restore_refuses_anything_but_two_dicts(blob: tuple[object, object]) -> None:
    with pytest.raises(ValueError, match=r"^not a KV snapshot$"):
        KVState.restore(pickle.dumps(blob))
