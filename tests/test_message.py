"""``@message``: frozen slots dataclasses that pickle through the constructor."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from transport.message import message


@message
class Put:
    key: str
    value: bytes
    seq: int = 0


@message
class Ping:
    pass


@message
class Wrapped:
    inner: Put


@message
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"n must be positive, got {self.n}")


class Extended(Put):
    pass


def test_a_message_is_a_frozen_slots_dataclass():
    m = Put("k", b"v")
    assert dataclasses.is_dataclass(m) and not hasattr(m, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.key = "other"  # type: ignore[misc]


@pytest.mark.parametrize("obj", [Put("k", b"v", 3), Ping(), Wrapped(Put("a", b"", 1))])
def test_messages_round_trip_through_their_constructor(obj):
    assert pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)) == obj
    cls, args = obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    assert cls is type(obj) and args == tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


class _Forged:
    """Pickles as a Positive with a bad argument: bytes a buggy peer could send."""

    def __reduce__(self):
        return (Positive, (-5,))


def test_loading_runs_the_checks_of_post_init():
    assert pickle.loads(pickle.dumps(Positive(1))) == Positive(1)
    with pytest.raises(ValueError, match="positive"):
        pickle.loads(pickle.dumps(_Forged()))


def test_an_undecorated_subclass_pickles_the_generic_way_not_as_its_parent():
    obj = Extended("k", b"v", 2)
    back = pickle.loads(pickle.dumps(obj))
    assert type(back) is Extended and back == obj


def test_keyword_only_fields_are_refused_at_class_creation():
    with pytest.raises(TypeError, match="positional"):
        @message
        class Bad:
            a: int
            b: int = dataclasses.field(default=0, kw_only=True)


def test_the_transports_own_wire_classes_are_messages():
    """What the transport itself sends (a control request, the fault rules it carries, a
    failure in an error reply) is declared with @message, and pickles through it."""
    from transport import ControlOp, ControlRequest, Failure, FaultRule

    failure = Failure.from_exception(ValueError("bad"))
    rule = FaultRule("*", "out", drop=0.5)
    for obj in (ControlRequest(ControlOp.SET_FAULTS, [rule]), rule, failure):
        cls, args = obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        assert cls is type(obj) and args == tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))
    back = pickle.loads(pickle.dumps(failure))
    assert (back.type_name, back.message) == ("ValueError", "bad") and isinstance(back.to_exception(), ValueError)
