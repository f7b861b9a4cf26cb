"""The one way tests run a coroutine and wait for a condition (imported as ``from helpers import ...``).

Tests share two cores with other runs, so nothing here measures how fast anything is: ``run`` bounds a
coroutine so a hang fails one test instead of the whole suite, and the ``wait_until`` pair polls a
condition against a deadline, so a test waits exactly as long as the behaviour takes and no longer,
instead of sleeping a guessed time and hoping. A timeout here is a ceiling for "it never happened", not
a speed requirement: keep it generous. Speed belongs in ``tests/benchmarks``.

The GUI tests have their Qt twins (over pytest-qt's ``waitUntil``) in ``tests/gui/conftest.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: ceiling for one ``run``: far above what any test needs, far below pytest's own per-test timeout
RUN_TIMEOUT = 45.0
#: ceiling for one ``wait_until``
WAIT_TIMEOUT = 10.0
#: how often a condition is polled; cheap conditions only (attribute reads, list lengths)
POLL_INTERVAL = 0.005


def run(coro: Awaitable[T], timeout: float = RUN_TIMEOUT) -> T:
    """Run one coroutine to completion in a fresh event loop; a hang becomes a TimeoutError."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def _timed_out(what: str, timeout: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def wait_until(condition: Callable[[], Any], timeout: float = WAIT_TIMEOUT, what: str = "the condition",
                     interval: float = POLL_INTERVAL) -> Any:
    """Await until ``condition()`` is truthy and return its value; fail naming ``what`` after ``timeout`` s.

    ``condition`` may be a coroutine function (e.g. "a request gets an answer"): it is awaited each time.

    The condition is always checked after the last sleep, so a late wake-up past the deadline still
    sees a condition that did become true.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def check() -> Any:
        result = condition()
        return await result if inspect.isawaitable(result) else result

    while not (result := await check()):
        if loop.time() >= deadline:
            raise _timed_out(what, timeout)
        await asyncio.sleep(interval)
    return result


def wait_until_blocking(condition: Callable[[], Any], timeout: float = WAIT_TIMEOUT, what: str = "the condition",
                        interval: float = POLL_INTERVAL) -> Any:
    """:func:`wait_until` for code outside an event loop (a test thread watching a server thread or process)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout)
        time.sleep(interval)
    return result
