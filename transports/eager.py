"""Run a coroutine inline until it first waits; only then make it a task.

Most rig commands (EXPSTATUS above all) are answered without awaiting anything. Starting their handler
right where the message was read, instead of in a new task, saves a task and a loop iteration per message,
a good part of a reply's latency (Python 3.12 calls this an eager task; we run on 3.11).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class _Continuation:
    """Awaitable that resumes a coroutine already started with ``send(None)``, delegating every
    yield to the task that runs it (what ``yield from`` does, for a coroutine started by hand)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Any:
        value = self.first
        while True:
            try:
                sent = yield value
            except BaseException as ex:  # cancellation and the like go to the coroutine
                try:
                    value = self.coro.throw(ex)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                value = self.coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _rest(continuation: _Continuation) -> Any:
    return await continuation


def start_eagerly(coro: Coroutine[Any, Any, Any],
                  spawn: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.ensure_future) -> Any:
    """Run ``coro`` up to its first real wait. Returns None when it finished inline (its result is dropped:
    callers use coroutines that deliver their own result), else what ``spawn`` made of the rest (a task).
    An exception the coroutine raises before waiting propagates here, as a plain call's would."""
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return spawn(_rest(_Continuation(coro, first)))
