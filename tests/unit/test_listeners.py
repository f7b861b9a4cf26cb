"""The listener helper every observable uses: unsubscribe works, a raising listener never stops the rest."""

import logging

from core.checks import is_finite, is_int, is_number
from core.listeners import Listeners
from core.state import LiveState


def test_unsubscribe_removes_exactly_that_listener_and_is_safe_twice():
    heard: list[tuple[str, int]] = []
    listeners: Listeners[[int]] = Listeners("test listener")
    off_a = listeners.add(lambda x: heard.append(("a", x)))
    listeners.add(lambda x: heard.append(("b", x)))
    listeners.notify(1)
    off_a()
    off_a()
    listeners.notify(2)
    assert heard == [("a", 1), ("b", 1), ("b", 2)] and len(listeners) == 1


def test_a_raising_listener_is_logged_and_the_others_still_run(caplog):
    heard = []
    listeners: Listeners[[str]] = Listeners("probe listener")

    def broken(_: str) -> None:
        raise RuntimeError("view gone")

    listeners.add(broken)
    listeners.add(heard.append)
    with caplog.at_level(logging.ERROR):
        listeners.notify("x")
    assert heard == ["x"] and "probe listener" in caplog.text and "view gone" in caplog.text


def test_a_listener_may_unsubscribe_itself_while_being_notified():
    listeners: Listeners[[]] = Listeners()
    calls = []

    def once() -> None:
        calls.append(1)
        off()

    off = listeners.add(once)
    listeners.notify()
    listeners.notify()
    assert calls == [1]


def test_live_state_subscribers_leave_nothing_behind():
    state = LiveState()
    mods = []
    off = state.subscribe(mods.append)
    state.set(["a"], 1)
    off()
    state.set(["a"], 2)
    assert len(mods) == 1


def test_integer_checks_refuse_bools():
    assert is_int(3) and not is_int(True) and not is_int(3.0) and not is_int("3")
    assert is_number(2.5) and is_number(2) and not is_number(False)
    assert is_finite(1.0) and not is_finite(float("nan")) and not is_finite(float("inf")) and not is_finite(True)


def test_an_int_beyond_float_range_is_not_finite_and_does_not_raise():
    assert is_finite(10**300) and not is_finite(2**4000) and not is_finite(-(2**4000))
