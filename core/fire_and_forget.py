"""Fire-and-forget: run slow, non-critical calls in the background, at most one at a time.

For calls whose result nobody waits for (refresh a remote display, log a value to a slow controller):
the caller must never block on them, a pile-up must not grow without bound, and a failure must not
break the caller. So: one call runs in the background; a call submitted while it runs is *dropped*
(counted in :attr:`FireAndForget.dropped` and logged); an exception becomes a warning (and a log line).

Coroutine functions run as tasks on the running loop; plain callables run in a worker thread
(``asyncio.to_thread``) so they cannot stall the loop. Pure asyncio: no network code here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class FireAndForgetWarning(RuntimeWarning):
    """A background call failed or was dropped."""


class FireAndForget:
    def __init__(self, name: str = "fire-and-forget") -> None:
        self.name = name
        self.dropped = 0
        self.failed = 0
        self.completed = 0
        self._task: asyncio.Task[Any] | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Start ``function(*args, **kwargs)`` in the background; False (and dropped) if one is running.

        Must be called from a running event loop.
        """
        label = getattr(function, "__name__", repr(function))
        if self.busy:
            self.dropped += 1
            log.warning("%s: %s() dropped: the previous call is still running (%d dropped so far)",
                        self.name, label, self.dropped)
            warnings.warn(f"{self.name}: {label}() dropped, previous call still running",
                          FireAndForgetWarning, stacklevel=2)
            return False
        self._task = asyncio.get_running_loop().create_task(self._guard(label, function, args, kwargs))
        return True

    async def _guard(self, label: str, function: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            if inspect.iscoroutinefunction(function):
                result = await function(*args, **kwargs)
            else:
                result = await asyncio.to_thread(function, *args, **kwargs)
            if inspect.isawaitable(result):  # a plain callable that returned a coroutine
                await result
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            self.failed += 1
            log.warning("%s: %s() failed: %s: %s", self.name, label, type(ex).__name__, ex)
            warnings.warn(f"{self.name}: {label}() failed: {type(ex).__name__}: {ex}",
                          FireAndForgetWarning, stacklevel=1)
        else:
            self.completed += 1

    async def join(self) -> None:
        """Wait until the background call (if any) has finished."""
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class FFProxy:
    """``FFProxy(obj).method(args)`` submits ``obj.method(args)`` to one :class:`FireAndForget`."""

    def __init__(self, target: Any, name: str | None = None) -> None:
        self._target = target
        self._ff = FireAndForget(name or f"ff:{type(target).__name__}")

    @property
    def ff(self) -> FireAndForget:
        return self._ff

    def __getattr__(self, name: str) -> Callable[..., bool]:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self._target, name)

        def submit(*args: Any, **kwargs: Any) -> bool:
            return self._ff.submit(method, *args, **kwargs)

        return submit

    async def ff_join(self) -> None:
        await self._ff.join()
