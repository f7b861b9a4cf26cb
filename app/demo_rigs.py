"""Start simulated rigs as real ``rigdeck serve`` processes: for ``rigdeck demo``, the GUI's demo, and tests.

:class:`RigProcess` runs one ``python -m app.cli serve RIG.yaml`` and reads its ``READY`` lines (the
real bound URIs, port 0 allowed). :func:`start_demo_rigs` starts every rig of ``resources/demo_rigs.yaml``
on free loopback ports and writes a console rigs file (remote_rigs form) pointing at them.

``demo_rigs.yaml`` maps a rig name to ``{role: main_sync | aux | manipulator, rig: <rig.yaml body>}``;
the first URI of each rig is the one the rigs file gets. Rigs whose transport module is missing are
skipped with a warning (so the demo works while a transport is still being built).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config import ConfigError, load_yaml_mapping
from transports.registry import TRANSPORTS

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEMO_RIGS = ROOT / "resources" / "demo_rigs.yaml"
READY_TIMEOUT = 30.0


class RigProcessError(RuntimeError):
    """A rig process exited or stayed silent before announcing its URIs."""


class RigProcess:
    """One ``rigdeck serve`` subprocess.

    After :meth:`wait_ready`, ``uris`` lists the bound URIs in rig-file order. ``stop()`` sends SIGTERM
    (clean shutdown: recorder files closed) and waits; ``kill()`` sends SIGKILL (a crash). stdout is read
    by a thread (so the pipe never fills); stderr goes to ``log_path`` (or is discarded). ``preexec`` runs in
    the child before it starts (POSIX; tests use it to lower its open-file limit).

    The rig stops cleanly when this process dies, however it dies (a SIGKILLed ``rigdeck demo`` used to
    leave its rigs running forever): it gets ``--launcher-pid`` and a stdin pipe whose write end only this
    process holds (see :func:`app.process_limits.exit_with_launcher`). On Linux the kernel's parent-death
    signal is tied to the *thread* that started the child: start rig processes from a thread that lives
    as long as they should (the main thread, as every caller here does).
    """

    def __init__(self, name: str, rig_file: Path, data_dir: Path | None = None, log_path: Path | None = None,
                 python: str = sys.executable, extra_args: list[str] | None = None, verbose: int = 0,
                 preexec: Callable[[], None] | None = None) -> None:
        self.name = name
        self.rig_file = Path(rig_file)
        self.data_dir = data_dir
        self.log_path = log_path
        self.uris: list[str] = []
        self.lines: list[str] = []
        self.stopped_cleanly = False
        # -v before the command: with it the rig logs every command it runs (tests count them there)
        cmd = [python, "-m", "app.cli", *(["-v"] * verbose), "serve", str(self.rig_file),
               "--launcher-pid", str(os.getpid())]
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        cmd += list(extra_args or [])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self._stderr = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        # stdin: a pipe we never write to; it closes (EOF in the rig) when this process dies
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.PIPE,
                                     text=True, cwd=str(ROOT), env=env, preexec_fn=preexec)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"rigproc-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next_line(self, deadline: float) -> str | None:
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RigProcessError(f"rig {self.name}: no READY within the timeout{self._stderr_tail()}") from None
        if line is not None:
            self.lines.append(line)
        return line

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> list[str]:
        """Block until the rig said ``SERVING``; returns its URIs. Raises RigProcessError if it died."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line is None:
                code = self.proc.wait()
                raise RigProcessError(f"rig {self.name} exited with code {code} before it was ready"
                                      f"{self._stderr_tail()}")
            parts = line.split()
            if len(parts) == 3 and parts[0] == "READY":
                self.uris.append(parts[2])
            elif parts[:1] == ["SERVING"]:
                return self.uris

    def _stderr_tail(self) -> str:
        if self.log_path is None or not Path(self.log_path).exists():
            return ""
        text = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        return (": " + " | ".join(text[-3:])) if text else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (then SIGKILL if it hangs). Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("rig %s did not stop in %.0f s; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait()
        self._finish()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL now (a crash: no footer, sockets vanish)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._finish()
        return self.proc.returncode

    def _finish(self) -> None:
        self._reader.join(timeout=5)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        self.stopped_cleanly = any(line.startswith("STOPPED ") for line in self.lines)
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()
            self._stderr = subprocess.DEVNULL
        for pipe in (self.proc.stdout, self.proc.stdin):
            if pipe is not None:
                pipe.close()


def start_rig_processes(rigs: dict[str, Path], data_dirs: dict[str, Path | None], log_dir: Path | None = None,
                        timeout: float = READY_TIMEOUT) -> dict[str, RigProcess]:
    """Start several rig files at once (in parallel: Python start-up dominates), wait for all READY.

    On any failure every process already started is stopped and the error re-raised.
    """
    procs: dict[str, RigProcess] = {}
    try:
        for name, rig_file in rigs.items():
            log_path = (log_dir / f"{name}.log") if log_dir is not None else None
            procs[name] = RigProcess(name, rig_file, data_dirs.get(name), log_path)
        for proc in procs.values():
            proc.wait_ready(timeout)
    except BaseException:
        for proc in procs.values():
            proc.kill()
        raise
    return procs


def transport_available(scheme: str) -> bool:
    """True when this build has a transport for ``scheme``."""
    return any(t.scheme == scheme.lower() for t in TRANSPORTS)


@dataclass
class DemoRigs:
    """What :func:`start_demo_rigs` started: the processes, the rigs file for the console, what was skipped."""

    procs: dict[str, RigProcess]
    rigs_file: Path
    rigs: dict[str, dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """Clean shutdown of every rig (SIGTERM; recorder files closed)."""
        for proc in self.procs.values():
            proc.stop()


def load_demo_rigs(path: Path = DEMO_RIGS) -> dict[str, dict[str, Any]]:
    data = load_yaml_mapping(path, "demo rigs file")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("rig"), dict):
            raise ConfigError(f"{path}: rig {name!r}: expected {{role: ..., rig: {{uris: ..., ...}}}}")
        out[str(name)] = entry
    return out


def files_endpoint(rig: dict[str, Any], bound: list[str]) -> str | None:
    """The bound URI of a rig's files-only zmq listener (its rigs-file ``files:`` option), if it has one."""
    uris = rig.get("uris") or [rig.get("uri")]
    for entry, uri in zip(uris, bound, strict=False):
        if isinstance(entry, dict) and entry.get("files_only") is True and uri.startswith("zmq://"):
            return uri
    return None


def start_demo_rigs(data_dir: str | os.PathLike[str], demo_file: Path = DEMO_RIGS,
                    timeout: float = READY_TIMEOUT) -> DemoRigs:
    """Start the demo rigs, each filing sessions under ``<data_dir>/rigs/<name>`` (as separate PCs would),
    and write ``<data_dir>/demo/remote_rigs.yaml`` for the console."""
    base = Path(data_dir).expanduser()
    demo_dir = base / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    entries = load_demo_rigs(demo_file)
    rig_files: dict[str, Path] = {}
    data_dirs: dict[str, Path | None] = {}
    skipped: dict[str, str] = {}
    for name, entry in entries.items():
        body = {"name": name, **entry["rig"]}
        uris = body.get("uris") or [body.get("uri")]
        schemes = {str(u["uri"] if isinstance(u, dict) else u).split("://", 1)[0] for u in uris}
        missing = sorted(s for s in schemes if not transport_available(s))
        if missing:
            skipped[name] = f"transport {', '.join(s + '://' for s in missing)} not available yet"
            log.warning("demo: skipping rig %s: %s", name, skipped[name])
            continue
        rig_file = demo_dir / f"{name}.rig.yaml"
        rig_file.write_text(f"# generated by rigdeck demo from {demo_file.name}\n"
                            + yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
        rig_files[name] = rig_file
        data_dirs[name] = base / "rigs" / name
    procs = start_rig_processes(rig_files, data_dirs, log_dir=demo_dir, timeout=timeout)
    rigs: dict[str, dict[str, Any]] = {}
    for name, proc in procs.items():
        role = str(entries[name].get("role", "aux"))
        rigs[name] = {"uri": proc.uris[0]} | ({"role": role} if role != "aux" else {})
        files = files_endpoint(entries[name]["rig"], proc.uris)
        if files:
            rigs[name]["files"] = files
        if entries[name].get("description"):
            rigs[name]["description"] = str(entries[name]["description"])
    rigs_file = demo_dir / "remote_rigs.yaml"
    header = "# remote_rigs.yaml written by `rigdeck demo`: the simulated rigs it started\n"
    rigs_file.write_text(header + yaml.safe_dump(rigs, sort_keys=False), encoding="utf-8")
    return DemoRigs(procs, rigs_file, rigs, skipped)
