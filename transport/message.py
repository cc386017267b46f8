"""``@message``: the declaration every class whose objects cross the wire must carry.

Transport's own wire classes carry it (:class:`~transport.control.ControlRequest`,
:class:`~transport.faults.FaultRule`, :class:`~transport.envelope.Failure`;
``tests/test_message.py`` checks them). An :class:`~transport.envelope.Envelope`
itself never crosses as a class: the codec writes its fields.

A message is a frozen dataclass with ``__slots__`` (small, immutable, hashable).
Pickled as it comes, such a class goes through dataclasses' own
``__getstate__``/``__setstate__``, Python loops over the fields on both
sides: measured here at about 3x the cost of handing pickle the constructor
and a tuple of the field values (22 us against 7 us to dump a five-field
request, 8 against 6 to load it). Every message of every system (KV, Raft,
MapReduce) crosses the wire, most of them several times, so the decorator
gives each class that cheaper reduction, built once from its fields.

Loading calls the class's own ``__init__`` (so ``__post_init__`` checks run
on what a peer sent, too). A subclass that adds fields must be decorated
itself; one that is not pickles the slow, generic way rather than wrongly.

Every ``@message`` class is also registered: frames from a client-role key
are decoded by a restricted unpickler (:func:`transport.codec.restricted_loads`)
that builds only registered classes and plain data, so a client can send
requests but never code. :func:`register_message` registers a class that is
not declared with ``@message`` (an enum, a plain dataclass) for the same;
:func:`members_only` takes a declared one off the list.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

_declared: set[type] = set()


def is_message(cls: type) -> bool:
    """Whether ``cls`` itself (not a base of it) was declared with :func:`message`."""
    return cls in _declared


_registered: dict[tuple[str, str], type] = {}
"""Classes a client-role key may send, by (module, qualified name) as pickle names them."""


def register_message(cls: type[T]) -> type[T]:
    """Let ``cls`` be built from the frames of client-role keys too (``@message`` classes are already)."""
    _registered[(cls.__module__, cls.__qualname__)] = cls
    return cls


def members_only(cls: type[T]) -> type[T]:
    """Keep ``cls`` off the client-role keys' list: a request only a member may make (changing who is in a
    cluster, say). A client key's frame that holds one is refused before anything in it is built."""
    _registered.pop((cls.__module__, cls.__qualname__), None)
    return cls


def registered_message(module: str, name: str) -> type | None:
    """The registered class pickle names ``module.name``, if any (never imports anything)."""
    return _registered.get((module, name))


@dataclass_transform(frozen_default=True)  # type checkers see a frozen dataclass
def message(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen slots dataclass that pickles as its constructor and field values."""
    made: Any = dataclasses.dataclass(frozen=True, slots=True)(cls)
    fields = dataclasses.fields(made)
    for f in fields:
        if not f.init or f.kw_only:
            raise TypeError(f"@message {made.__qualname__}.{f.name}: every field must be a positional __init__ argument")
    names = tuple(f.name for f in fields)
    values: Callable[[Any], tuple]
    if not names:
        def values(_obj: Any) -> tuple:
            return ()
    elif len(names) == 1:
        one = operator.attrgetter(names[0])

        def values(obj: Any) -> tuple:
            return (one(obj),)
    else:
        values = operator.attrgetter(*names)  # C code: one call returns the tuple

    generic = object.__reduce_ex__

    # __reduce_ex__ rather than __reduce__: pickle asks it first, and the
    # generic fallback for a subclass (object's own) then still works.
    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        if type(self) is not made:  # an undecorated subclass: its own fields are unknown here
            return generic(self, protocol)
        return (made, values(self))

    made.__reduce_ex__ = __reduce_ex__
    _declared.add(made)
    return register_message(made)
