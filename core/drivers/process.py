"""A child process the rig supervises: started with asyncio, its output kept, stopped politely, never left behind.

Both the external-program driver (:mod:`core.drivers.command`) and the FFmpeg camera
(:mod:`core.drivers.video`) run one of these per session. What it guarantees:

- **No shell.** ``argv`` is executed as given; a user who wants a shell writes ``[sh, -c, "..."]``.
- **Output is never lost and never blocks the child.** Each line of stdout/stderr is read as it comes
  (a full pipe would freeze the program), appended to a log file, kept in a ring of the last lines (for
  error messages), and handed to optional line callbacks (a ready pattern, ffmpeg's frame timestamps).
- **Stopping escalates.** :meth:`stop` sends the requested stop (a signal, or text on stdin such as
  ffmpeg's ``q``), waits ``grace`` seconds, then terminates, waits again, then kills. It returns how the
  process ended, so the rig can report it.
- **Children do not outlive the rig.** The child gets its own process group (POSIX: a new session;
  Windows: ``CREATE_NEW_PROCESS_GROUP``) so signals reach a shell's children too, and a Ctrl-C typed at
  the rig's terminal reaches the rig, which then stops its children in order. When the program
  itself exits, the rest of its group is killed (POSIX), so nothing it started lingers. :meth:`kill` and an
  ``atexit`` hook kill whatever is still running when the rig closes or its interpreter exits. A rig
  killed with SIGKILL gets no chance to do so: on Linux the program is started through util-linux's
  ``setpriv --pdeathsig TERM`` (when the machine has it), so the kernel sends it SIGTERM when the rig
  dies; a rig started again then does not find its camera or its acquisition program still held.

Signals on Windows: ``SIGINT`` and ``SIGBREAK`` become ``CTRL_BREAK_EVENT`` sent to the child's group (the
only console event a process group can receive), ``SIGTERM`` becomes ``TerminateProcess``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from core.listeners import Listeners

log = logging.getLogger(__name__)

IS_WINDOWS = sys.platform == "win32"
#: signal names a rig file may use for ``stop.signal``
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT")
LAST_LINES = 40

LineListener = Callable[[str, str], None]  # (stream name "stdout" | "stderr", line without newline)

_ALIVE: weakref.WeakSet[SupervisedProcess] = weakref.WeakSet()


@functools.cache
def death_signal_prefix() -> tuple[str, ...]:
    """``(setpriv, --pdeathsig, TERM, --)`` on Linux with a ``setpriv`` that knows the option, else ``()``:
    what makes the kernel end a program whose rig was killed (Python's own ``preexec_fn`` would do it too,
    but is unsafe in a process with threads, as a rig is)."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return ()
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "TERM", "--") if "--pdeathsig" in usage else ()


def _kill_leftovers() -> None:
    """Interpreter exit: kill every child still running (the loop that owned them may be gone)."""
    for child in list(_ALIVE):
        child.kill_now()


atexit.register(_kill_leftovers)


class ProcessError(RuntimeError):
    """A program could not be started (not found, not executable, bad cwd); the message says which."""


@dataclass(frozen=True)
class StopPolicy:
    """How to ask a program to finish: a signal (or ``stdin`` text) first, escalating every ``grace`` s."""

    signal: str = "SIGINT"
    grace: float = 5.0
    stdin: str | None = None  # e.g. "q\n" for ffmpeg; sent instead of the signal when given


@dataclass(frozen=True)
class Exit:
    """How a supervised process ended: its exit code (negative: killed by that signal on POSIX) and by what."""

    code: int | None
    by: str  # "exited" (on its own), "SIGINT"/"stdin" (the polite stop worked), "terminate", "kill"
    last_lines: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.code is None:
            return "did not start"
        if self.code < 0 and not IS_WINDOWS:
            try:
                name = signal.Signals(-self.code).name
            except ValueError:
                name = str(-self.code)
            return f"killed by {name}"
        return f"exit code {self.code}"


def resolve_program(program: str, cwd: Path | None = None) -> str | None:
    """The executable ``program`` names (a path, relative to ``cwd`` if it has a separator, or a PATH
    lookup), or None when it cannot be found or is not executable."""
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(program).expanduser()
        if not path.is_absolute() and cwd is not None:
            path = cwd / path
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program)


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own protocol for a subprocess with pipes, which also says when the process itself exited."""

    def __init__(self, exited: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self._exited_future = exited

    def process_exited(self) -> None:
        super().process_exited()
        if not self._exited_future.done():
            self._exited_future.set_result(None)


class SupervisedProcess:
    """One run of a program (see the module docstring). Create, ``await start()``, ``await stop()``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        stdin_pipe: bool = False,
        last_lines: int = LAST_LINES,
    ) -> None:
        if not argv:
            raise ProcessError(f"{name}: empty command")
        self.argv = [str(a) for a in argv]
        self.name = name
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.stdin_pipe = stdin_pipe
        self.lines: collections.deque[str] = collections.deque(maxlen=last_lines)
        self.last_output_at: float | None = None
        self.started_at: float | None = None
        self._listeners: dict[str, Listeners[[str, str]]] = {
            stream: Listeners(f"{name}: {stream} listener") for stream in ("stdout", "stderr")}
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._exit_task: asyncio.Task[int] | None = None
        self._exited: asyncio.Future[None] | None = None
        self.exit: Exit | None = None
        self._stopping: str | None = None

    # ------------------------------------------------------------------ observing
    def on_line(self, listener: LineListener, stream: str = "both") -> None:
        """Call ``listener(stream, line)`` for each output line (``stream`` "stdout", "stderr" or "both")."""
        for key in (("stdout", "stderr") if stream == "both" else (stream,)):
            self._listeners[key].add(listener)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` (or :meth:`kill`) was called: an exit from then on was asked for."""
        return self._stopping is not None

    def tail(self, n: int = 10) -> list[str]:
        return list(self.lines)[-n:]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the program; raises :class:`ProcessError` (saying what is wrong) when it cannot start."""
        if self._proc is not None:
            raise ProcessError(f"{self.name}: already started")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _finish
            self._log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} started: {self.argv!r}\n".encode())
            self._log.flush()
        kwargs: dict[str, Any] = {}
        if IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        exited = self._exited
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitAwareProtocol(exited, loop),
                *self._launch_argv(), cwd=str(self.cwd) if self.cwd is not None else None, env=self.env,
                stdin=asyncio.subprocess.PIPE if self.stdin_pipe else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **kwargs)
            self._proc = asyncio.subprocess.Process(transport, protocol, loop)
        except (OSError, ValueError) as ex:
            self._close_log(f"could not start: {ex}")
            what = getattr(ex, "strerror", None) or str(ex)
            raise ProcessError(f"{self.name}: cannot run {self.argv[0]!r}"
                               f"{f' in {self.cwd}' if self.cwd else ''}: {what}") from None
        self.started_at = time.time()
        _ALIVE.add(self)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [asyncio.create_task(self._read(self._proc.stdout, "stdout"), name=f"{self.name}-stdout"),
                         asyncio.create_task(self._read(self._proc.stderr, "stderr"), name=f"{self.name}-stderr")]
        self._exit_task = asyncio.create_task(self._wait_exit(), name=f"{self.name}-wait")

    def _launch_argv(self) -> tuple[str, ...]:
        """``argv``, behind :func:`death_signal_prefix` when the program is an executable file (otherwise the
        program's own start-up error, "no such file", comes from Python as a clear ProcessError)."""
        program = self.argv[0]
        if "/" not in program:
            program = shutil.which(program, path=(self.env or os.environ).get("PATH")) or program
        elif not os.path.isabs(program) and self.cwd is not None:
            program = os.path.join(self.cwd, program)
        if os.path.isfile(program) and os.access(program, os.X_OK):
            return (*death_signal_prefix(), *self.argv)
        return tuple(self.argv)

    async def _read(self, stream: asyncio.StreamReader, which: str) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the stream limit: take what there is
                raw = await stream.read(1 << 16)
            except (ConnectionError, OSError):
                return
            if not raw:
                return
            self.last_output_at = time.time()
            if self._log is not None:
                self._log.write(raw if which == "stdout" else b"[stderr] " + raw)
                self._log.flush()
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines.append(line)
            self._listeners[which].notify(which, line)

    async def _wait_exit(self) -> int:
        assert self._proc is not None
        # The program itself has ended. (Process.wait() would also wait for every process still holding
        # its pipes, such as a shell's background child, before Python 3.12.)
        await self._exited
        code = self._proc.returncode
        assert code is not None
        if not IS_WINDOWS:  # whatever it started (a shell's children) ends with it; ESRCH when nothing is left
            with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        for reader in self._readers:  # the pipes close with the process (or its last child): drain them
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(reader), 2.0)
        self.exit = Exit(code, self._stopping or "exited", tuple(self.lines))
        self._finish()
        return code

    async def wait(self) -> Exit:
        """Wait until the program has exited (whoever stopped it) and its output is read."""
        if self._exit_task is None:
            return Exit(None, "exited")
        await asyncio.shield(self._exit_task)
        assert self.exit is not None
        return self.exit

    async def stop(self, policy: StopPolicy = StopPolicy()) -> Exit:
        """Ask the program to finish, escalating (polite stop, terminate, kill), each after ``grace`` s."""
        if self._proc is None or self._exit_task is None:
            return Exit(None, "exited")
        if self._proc.returncode is None and self._stopping is None:
            steps: list[tuple[str, Callable[[], None]]] = [
                ("stdin", lambda: self._write_stdin(policy.stdin or "")) if policy.stdin is not None
                else (policy.signal, lambda: self._send_signal(policy.signal)),
                ("terminate", self._terminate),
                ("kill", self._kill),
            ]
            for step, action in steps:
                self._stopping = step
                try:
                    action()
                except (ProcessLookupError, OSError):
                    pass  # gone already
                done, _ = await asyncio.wait({self._exit_task}, timeout=policy.grace if step != "kill" else None)
                if done:
                    break
                log.warning("%s: still running %.3g s after %s; escalating", self.name, policy.grace, step)
        return await self.wait()

    async def kill(self) -> Exit:
        """Kill now (the rig is closing): no grace."""
        if self._proc is not None and self._proc.returncode is None:
            self._stopping = self._stopping or "kill"
            self.kill_now()
        return await self.wait()

    def kill_now(self) -> None:
        """Synchronous kill of the child (and its process group on POSIX); safe from atexit."""
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            self._kill()

    # ------------------------------------------------------------------ platform details
    def _write_stdin(self, text: str) -> None:
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None:
            raise OSError("stdin is not a pipe")
        stdin.write(text.encode())
        with contextlib.suppress(Exception):
            stdin.close()

    def _send_signal(self, name: str) -> None:
        assert self._proc is not None
        if IS_WINDOWS:
            if name in ("SIGINT", "SIGBREAK"):
                self._proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            else:
                self._proc.terminate()
            return
        signum = getattr(signal, name)
        os.killpg(self._proc.pid, signum)  # the group: a shell's children hear it too

    def _terminate(self) -> None:
        assert self._proc is not None
        if IS_WINDOWS:
            self._proc.terminate()
        else:
            os.killpg(self._proc.pid, signal.SIGTERM)

    def _kill(self) -> None:
        assert self._proc is not None
        if IS_WINDOWS:
            self._proc.kill()
        else:
            os.killpg(self._proc.pid, signal.SIGKILL)

    def _finish(self) -> None:
        _ALIVE.discard(self)
        code = self._proc.returncode if self._proc is not None else None
        self._close_log(f"ended: {self.exit.describe() if self.exit else code} ({self._stopping or 'on its own'})")

    def _close_log(self, note: str) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {note}\n".encode())
                self._log.close()
            self._log = None
