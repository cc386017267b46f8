"""Actor.reply_later: an inline actor answers an ask from a later handler, over the ask's own connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from actors import Actor, ActorSystem, AskTimeout


class Holder(Actor):
    """Inline. ``("hold", k)``: keep the ask's target under ``k``; ``("answer", k, v)``: answer it with ``v``;
    ``("hold-then-fail", k)``: keep it, then raise; ``"plain"``: answered by its return value."""

    inline = True

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[Any, Any] = {}

    def on_receive(self, message: Any) -> Any:
        if message == "plain":
            return "returned"
        if message == "tell-probe":
            self.held["tell"] = self.reply_later()
            return None
        if message == "what-did-the-tell-get":
            return self.held.get("tell", "nothing")
        verb, key, *rest = message
        if verb == "hold":
            self.held[key] = self.reply_later()
            return "never sent"
        if verb == "hold-then-fail":
            self.held[key] = self.reply_later()
            raise ValueError("the handler failed after taking the target")
        if verb == "answer":
            self.held.pop(key).set(rest[0])
            return None
        raise AssertionError(message)


class Threaded(Actor):
    def on_receive(self, message: Any) -> Any:
        return self.reply_later()


@pytest.fixture
def asker() -> Iterator[ActorSystem]:
    """A second system in this process: its asks cross a real ZeroMQ connection to ``system``."""
    with ActorSystem() as other:
        yield other


def test_a_held_ask_is_answered_by_a_later_handler_over_the_network(system: ActorSystem, asker: ActorSystem) -> None:
    system.spawn(Holder, name="holder")
    ref = asker.ref(system.endpoint, "holder")
    first = ref.ask(("hold", 1), block=False, timeout=10)
    second = ref.ask(("hold", 2), block=False, timeout=10)
    ref.tell(("answer", 2, "two"))
    assert second.get() == "two"  # answered in the order the holder chose, not the order asked
    ref.tell(("answer", 1, "one"))
    assert first.get() == "one"
    assert ref.ask("plain", timeout=10) == "returned"  # an ask it does not hold still gets its return value


def test_the_return_value_of_a_handler_that_took_the_target_is_not_sent(system: ActorSystem, asker: ActorSystem) -> None:
    system.spawn(Holder, name="holder")
    ref = asker.ref(system.endpoint, "holder")
    held = ref.ask(("hold", 1), block=False, timeout=0.5)
    with pytest.raises(AskTimeout):
        held.get()  # "never sent" would have arrived at once


def test_a_local_ask_can_be_held_too(system: ActorSystem) -> None:
    ref = system.spawn(Holder, name="holder")
    held = ref.ask(("hold", "k"), block=False, timeout=10)
    ref.tell(("answer", "k", 42))
    assert held.get() == 42


def test_a_tell_has_no_target_to_take(system: ActorSystem) -> None:
    ref = system.spawn(Holder, name="holder")
    ref.tell("tell-probe")
    assert ref.ask("what-did-the-tell-get", timeout=10) is None


def test_a_handler_that_fails_after_taking_the_target_answers_the_error_once(system: ActorSystem, asker: ActorSystem) -> None:
    system.spawn(Holder, name="holder")
    ref = asker.ref(system.endpoint, "holder")
    with pytest.raises(ValueError, match="failed after taking"):  # the remote exception, rebuilt
        ref.ask(("hold-then-fail", 1), timeout=10)
    ref.tell(("answer", 1, "too late"))  # the one-shot target ignores a second answer
    assert ref.ask("plain", timeout=10) == "returned"  # and the actor goes on, as after any ask that raised


def test_a_threaded_actor_is_told_it_cannot_answer_later(system: ActorSystem) -> None:
    ref = system.spawn(Threaded, name="threaded")
    with pytest.raises(RuntimeError, match="only an inline actor can answer an ask later"):
        ref.ask("anything", timeout=10)
