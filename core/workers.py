"""A plain thread pool for file work done on behalf of the event loop (checksums, chunk writes, scans).

Why not ``asyncio.to_thread``: under the window the loop is qasync's, whose default executor is a pool of
QThreads that Qt destroys at exit while idle ones still run ("QThread: Destroyed while thread is still
running"). These are ordinary Python threads, named so a stack dump says what they are.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: enough for a few rigs' transfers at once (each keeps one write in flight) plus a scan
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=6, thread_name_prefix="rigdeck-io")


async def in_worker(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in the pool, awaited without holding the loop."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(func, *args, **kwargs))
