"""The external-program driver: any acquisition program, run once per session (``drivers.commands``).

A lab's own acquisition software (a camera grabber, an ephys recorder, a script) becomes part of a
RigDeck session without changing it::

    drivers:
      commands:
        acquisition:
          run: [python3, acquire.py, --out, "{session_path}", --ref, "{exp_ref}"]
          start_on: EXPSTART              # or EXPINIT
          stop: {signal: SIGINT, grace: 5}
          cwd: .                          # relative to the rig file
          env: {CAMERA: left}
          ready: "camera ready"           # optional regex on its output, with ready_timeout (s)

What the rig guarantees about it (the session-facing half lives in :class:`core.service.RigService`):

- the command line's ``{exp_ref} {session_path} {subject} {rig} {date}`` are filled in (``{{``/``}}`` for
  literal braces), and the same values are in ``RIGDECK_EXP_REF``, ``RIGDECK_SESSION_PATH``, ... ;
- no shell is involved unless ``run`` names one;
- stdout and stderr go to ``<session>/<name>.log``; the last lines are in the live state;
- :meth:`CommandDriver.start` returns once the program runs, or once it printed its ``ready`` line; it
  raises :class:`~core.drivers.base.DriverError` (program stopped) when the line does not come in time
  or the program exits first;
- :meth:`CommandDriver.stop` stops it (``stop`` policy, then SIGTERM, then SIGKILL) and reports the exit;
- an exit the rig did not ask for (a crash, or a program that ends by itself mid-session) is reported
  to the fault listeners with the program's last output, so the rig can raise an error status.
"""

from __future__ import annotations

import asyncio
import os
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.checks import is_finite
from core.drivers.base import DriverError, FaultListener, SessionInfo, health
from core.drivers.process import STOP_SIGNALS, Exit, ProcessError, StopPolicy, SupervisedProcess, resolve_program
from core.listeners import Listeners, Unsubscribe

PLACEHOLDERS = ("exp_ref", "session_path", "subject", "rig", "date")
START_ON = ("EXPSTART", "EXPINIT")
COMMAND_KEYS: dict[str, str] = {
    "run": "the command line, a list: program then arguments (placeholders allowed)",
    "start_on": "EXPSTART (default) or EXPINIT",
    "stop": "{signal: SIGINT, grace: 5} (or {stdin: 'q', grace: 5}); then SIGTERM, then SIGKILL",
    "cwd": "working directory (relative to the rig file; default: the rig file's folder)",
    "env": "extra environment variables {NAME: value} (placeholders allowed)",
    "ready": "regex: the session starts once a line of output matches it",
    "ready_timeout": "seconds to wait for the ready line (default 30)",
}
TAIL = 5


@dataclass(frozen=True)
class CommandSpec:
    """One validated ``drivers.commands.<name>`` entry."""

    name: str
    run: tuple[str, ...]
    start_on: str = "EXPSTART"
    stop: StopPolicy = field(default_factory=StopPolicy)
    cwd: Path = Path(".")
    env: Mapping[str, str] = field(default_factory=dict)
    ready: str | None = None
    ready_timeout: float = 30.0


def _placeholders_ok(text: str, what: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as ex:
        raise ValueError(f"{what}: {ex} in {text!r} (write {{{{ and }}}} for literal braces)") from None
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        raise ValueError(f"{what}: unknown placeholder(s) {unknown} in {text!r}; known: {list(PLACEHOLDERS)}")


def parse_command(name: str, raw: Any, base_dir: Path) -> CommandSpec:
    """Validate one command entry; ``ValueError`` names the key (the caller adds file and entry)."""
    if isinstance(raw, list | str):
        raw = {"run": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected {{run: [program, args...], ...}}, not {raw!r}")
    extra = sorted(set(map(str, raw)) - set(COMMAND_KEYS))
    if extra:
        raise ValueError(f"unknown key(s) {extra}; allowed: {sorted(COMMAND_KEYS)}")
    run = raw.get("run")
    if isinstance(run, str):
        raise ValueError(f"run must be a list [program, arg, ...] (no shell is used), not the string {run!r}; "
                         "write [sh, -c, '...'] if you want a shell")
    if not isinstance(run, list) or not run or not all(isinstance(a, str | int | float) for a in run):
        raise ValueError(f"run must be a non-empty list [program, arg, ...], not {run!r}")
    argv = tuple(str(a) for a in run)
    for i, arg in enumerate(argv):
        _placeholders_ok(arg, f"run[{i}]")
    start_on = str(raw.get("start_on", "EXPSTART")).upper()
    if start_on not in START_ON:
        raise ValueError(f"start_on must be one of {list(START_ON)}, not {raw.get('start_on')!r}")
    stop = raw.get("stop", {})
    if isinstance(stop, str):
        stop = {"signal": stop}
    if not isinstance(stop, Mapping) or set(map(str, stop)) - {"signal", "grace", "stdin"}:
        raise ValueError(f"stop must be {{signal: SIGINT, grace: 5}} or {{stdin: TEXT, grace: 5}}, not {stop!r}")
    signame = str(stop.get("signal", "SIGINT")).upper()
    signame = signame if signame.startswith("SIG") else "SIG" + signame
    if signame not in STOP_SIGNALS:
        raise ValueError(f"stop.signal must be one of {list(STOP_SIGNALS)}, not {stop.get('signal')!r}")
    grace = stop.get("grace", 5)
    if not is_finite(grace) or not 0 < grace <= 600:
        raise ValueError(f"stop.grace must be seconds in (0, 600], not {grace!r}")
    stdin = stop.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise ValueError(f"stop.stdin must be text, not {stdin!r}")
    cwd_raw = raw.get("cwd", ".")
    if not isinstance(cwd_raw, str) or not cwd_raw:
        raise ValueError(f"cwd must be a folder path, not {cwd_raw!r}")
    cwd = Path(cwd_raw).expanduser()
    cwd = cwd if cwd.is_absolute() else (base_dir / cwd)
    env = raw.get("env") or {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                               for k, v in env.items()):
        raise ValueError(f"env must be a mapping {{NAME: value}}, not {env!r}")
    env = {k: str(v) for k, v in env.items()}
    for key, value in env.items():
        _placeholders_ok(value, f"env.{key}")
    ready = raw.get("ready")
    if ready is not None:
        if not isinstance(ready, str) or not ready:
            raise ValueError(f"ready must be a regular expression, not {ready!r}")
        try:
            re.compile(ready)
        except re.error as ex:
            raise ValueError(f"ready: bad regular expression {ready!r}: {ex}") from None
    timeout = raw.get("ready_timeout", 30)
    if not is_finite(timeout) or not 0 < timeout <= 3600:
        raise ValueError(f"ready_timeout must be seconds in (0, 3600], not {timeout!r}")
    return CommandSpec(name=name, run=argv, start_on=start_on,
                       stop=StopPolicy(signame, float(grace), stdin + ("\n" if not stdin.endswith("\n") else "")
                                       if stdin else None),
                       cwd=cwd, env=env, ready=ready, ready_timeout=float(timeout))


def check_command(spec: CommandSpec) -> str | None:
    """Readiness without running anything: the folder exists and the program is found and executable."""
    if not spec.cwd.is_dir():
        return f"working folder {spec.cwd} does not exist"
    program = spec.run[0]
    if "{" in program:
        return None  # decided per session
    if resolve_program(program, spec.cwd) is None:
        where = "in that folder" if (os.sep in program or "/" in program) else "on PATH"
        return f"program {program!r} not found or not executable ({where})"
    return None


def _tail_text(lines: list[str]) -> str:
    return " | ".join(line.strip() for line in lines if line.strip()) or "(no output)"


class CommandDriver:
    """One external program of a rig (see the module docstring)."""

    role = "program"
    kind = "command"

    def __init__(self, spec: CommandSpec, rig: str = "rig") -> None:
        self.spec = spec
        self.name = spec.name
        self.rig = rig
        self.process: SupervisedProcess | None = None
        self.last_exit: Exit | None = None
        self.last_error: str | None = None
        self.session: SessionInfo | None = None
        self._fault_listeners: Listeners[[str, str]] = Listeners(f"program {self.name}: fault listener")
        self._change_listeners: Listeners[[str]] = Listeners(f"program {self.name}: change listener")
        self._watch: asyncio.Task[None] | None = None

    @property
    def start_on(self) -> str:
        return self.spec.start_on

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def on_fault(self, listener: FaultListener) -> Unsubscribe:
        """``listener(name, text)`` when the program ends mid-session (not when the rig stops it)."""
        return self._fault_listeners.add(listener)

    def on_change(self, listener: Callable[[str], object]) -> Unsubscribe:
        """``listener(name)`` after output or a state change (the rig republishes health, throttled)."""
        return self._change_listeners.add(listener)

    def _changed(self, *_: Any) -> None:
        self._change_listeners.notify(self.name)

    def argv_for(self, session: SessionInfo) -> list[str]:
        values = session.placeholders()
        return [arg.format(**values) for arg in self.spec.run]

    def env_for(self, session: SessionInfo) -> dict[str, str]:
        values = session.placeholders()
        env = dict(os.environ)
        env.update(session.environment())
        env.update({k: v.format(**values) for k, v in self.spec.env.items()})
        env.setdefault("PYTHONUNBUFFERED", "1")  # a Python program's output reaches the log as it happens
        return env

    async def start(self, session: SessionInfo) -> None:
        """Run the program for ``session``; returns once it runs (or printed its ready line)."""
        if self.running:
            raise DriverError(f"program {self.name} is already running (pid {self.process.pid})")  # type: ignore[union-attr]
        self.session = session
        self.last_error, self.last_exit = None, None
        proc = SupervisedProcess(self.argv_for(session), name=f"program {self.name}", cwd=self.spec.cwd,
                                 env=self.env_for(session), log_path=Path(session.session_path) / f"{self.name}.log",
                                 stdin_pipe=self.spec.stop.stdin is not None)
        ready: asyncio.Future[str] | None = None
        if self.spec.ready is not None:
            pattern = re.compile(self.spec.ready)
            ready = asyncio.get_running_loop().create_future()

            def look(_stream: str, line: str) -> None:
                if ready is not None and not ready.done() and pattern.search(line):
                    ready.set_result(line)

            proc.on_line(look)
        proc.on_line(self._changed)
        self.process = proc
        try:
            await proc.start()
        except ProcessError as ex:
            self.last_error = str(ex)
            raise DriverError(str(ex)) from None
        if ready is not None:
            await self._wait_ready(proc, ready)
        self._watch = asyncio.create_task(self._watch_exit(proc), name=f"program-{self.name}-watch")
        self._changed()

    async def _wait_ready(self, proc: SupervisedProcess, ready: asyncio.Future[str]) -> None:
        exited = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait({ready, exited}, timeout=self.spec.ready_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if ready in done:
            return
        if proc.running:
            await proc.stop(self.spec.stop)
            problem = (f"program {self.name} printed no line matching {self.spec.ready!r} within "
                       f"{self.spec.ready_timeout:g} s (stopped it)")
        else:
            problem = f"program {self.name} ended ({proc.exit.describe() if proc.exit else '?'}) before it was ready"
        self.last_exit = proc.exit
        self.last_error = f"{problem}; last output: {_tail_text(proc.tail(TAIL))}"
        self._changed()
        raise DriverError(self.last_error)

    async def _watch_exit(self, proc: SupervisedProcess) -> None:
        end = await proc.wait()
        self.last_exit = end
        if proc.stopping:
            self._changed()
            return
        ref = self.session.exp_ref if self.session else "?"
        self.last_error = (f"program {self.name} ended mid-session ({end.describe()}, session {ref}); "
                           f"last output: {_tail_text(list(end.last_lines)[-TAIL:])}")
        self._changed()
        self._fault_listeners.notify(self.name, self.last_error)

    async def stop(self) -> dict[str, Any]:
        """Stop it (policy, then SIGTERM, then SIGKILL) and say how it ended. Idempotent."""
        proc = self.process
        if proc is None:
            return self.report()
        end = await proc.stop(self.spec.stop)
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)
        self.last_exit = end
        self._changed()
        return self.report()

    async def close(self) -> None:
        """The rig is closing: stop politely (the program may be saving a file), kill if it lingers."""
        if self.running:
            await self.stop()

    def report(self) -> dict[str, Any]:
        """How the last run ended: exit code, what stopped it, its last lines, the log's path."""
        end = self.last_exit
        return {"exit_code": end.code if end else None, "ended_by": end.by if end else None,
                "error": self.last_error, "last_lines": list(end.last_lines)[-TAIL:] if end else self.tail(),
                "log": str(self.process.log_path) if self.process and self.process.log_path else None}

    def tail(self) -> list[str]:
        return self.process.tail(TAIL) if self.process else []

    def health(self) -> dict[str, Any]:
        proc = self.process
        return health(self.running, (proc.last_output_at or proc.started_at) if proc else None, self.last_error,
                      type="program", kind=self.kind, pid=proc.pid if proc else None,
                      exit_code=self.last_exit.code if self.last_exit else None, last_lines=self.tail(),
                      started_at=round(proc.started_at, 3) if proc and proc.started_at else None)
