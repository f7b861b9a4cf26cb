"""Process-wide start-up for long-running commands (``rigdeck serve``, ``rigdeck relay``, the console).

- :func:`raise_open_file_limit`: every socket, recording and log file takes a descriptor from one per-process
  pool whose soft limit is often 1024 while the hard limit the administrator allows is far higher. A rig
  that runs out fails to open its recordings, so the soft limit is raised to the hard limit at start-up
  (POSIX only: Windows has no such limit for sockets).
- :func:`limit_loop_errors`: when descriptors do run out, asyncio reports every failed ``accept()`` (and
  other errors it catches) through the loop's exception handler, by default with a full traceback each
  time; a flood then filled stderr with tens of thousands of tracebacks. Our handler writes one line per
  kind of error at most every few seconds, with a count of what it left out.
- :func:`reuse_freed_memory`: a rig serving session files allocates memory for each chunk; glibc returned
  that memory to the system and faulted fresh pages in for the next chunk (70,000 page faults per GiB
  served). Keeping up to 64 MiB of freed memory for reuse took that to ~2,200 and the rig's kernel time for
  1 GiB from 1.06 s to 0.70–0.78 s (glibc only; elsewhere nothing changes).
- :func:`exit_with_launcher`: a rig process started by a launcher (``rigdeck demo``, the GUI's demo, the
  tests) stops when the launcher dies, even by SIGKILL, which gives it no chance to stop its children.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from transports.rate_log import RateLimitedLog

log = logging.getLogger(__name__)

#: seconds between two lines about one kind of event-loop error
LOOP_ERROR_EVERY = 10.0
#: what the soft limit is raised to when the hard limit is "unlimited" (macOS refuses RLIM_INFINITY)
UNLIMITED_SOFT = 65536
#: errors meaning the process (or system) ran out of something: a line, never a traceback
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: prctl(2) option that has the kernel signal this process when its parent dies (Linux)
PR_SET_PDEATHSIG = 1


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard one; ``(before, after)``, or None where there is none."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_SOFT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as ex:  # e.g. macOS caps the soft limit below "unlimited"
            log.info("could not raise the open-file limit from %d to %d: %s", soft, target, ex)
            return soft, soft
        log.debug("open-file limit raised from %d to %d", soft, target)
        return soft, target
    return soft, soft


#: mallopt(3) parameters: allocations above this many bytes get pages of their own; freed memory above this
#: many bytes at the top of the heap goes back to the system
M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = -3, -1
CHUNK_MEMORY_KEPT = 64 * 1024 * 1024


def reuse_freed_memory() -> bool:
    """Have glibc keep freed file chunks' memory for the next ones (see the module docstring); False where
    there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024)) and bool(mallopt(M_TRIM_THRESHOLD, CHUNK_MEMORY_KEPT))


def limit_loop_errors(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install a rate-limited exception handler on ``loop`` (the running loop by default)."""
    loop = loop or asyncio.get_running_loop()
    rlog = RateLimitedLog(log, LOOP_ERROR_EVERY)

    def handler(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "event loop error")
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            rlog.warning(f"{message} {exc.errno}", "%s: %s (new connections wait until descriptors are free)",
                         message, exc)
            return
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        rlog.log(logging.ERROR, message, "%s%s", message, detail)
        if exc is not None:
            log.debug("%s", message, exc_info=exc)

    loop.set_exception_handler(handler)


def exit_with_launcher(launcher_pid: int, stop: Callable[[], None]) -> None:
    """Call ``stop`` (thread-safe, e.g. ``loop.call_soon_threadsafe(event.set)``) when the launcher dies.

    On Linux the kernel sends SIGTERM when our parent dies (prctl PR_SET_PDEATHSIG; the caller's SIGTERM
    handler then stops cleanly); if it died before that was set, we stop now. On every platform a thread
    also reads stdin, which the launcher holds the write end of, until EOF: the pipe closes when the
    launcher dies, however it dies.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
                log.info("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as ex:
            log.info("no parent-death signal: %s", ex)
        if os.getppid() != launcher_pid:  # the launcher is gone already (we were re-parented)
            stop()
            return

    try:
        # a descriptor of its own, read with os.read: a daemon thread blocked inside sys.stdin's buffered
        # reader holds its lock, and the interpreter aborts (SIGABRT) when it closes stdin at exit
        fd = os.dup(0)
    except OSError:  # no stdin at all: nothing to watch
        return

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        log.warning("the launcher (pid %d) is gone: stopping", launcher_pid)
        stop()

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
