"""Rig processes do not outlive their launcher: a launcher SIGKILLed (no chance to stop its children) takes
its ``rigdeck serve`` processes with it, and a rig whose launcher closes its stdin pipe stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from e2e import ROOT, cli_env
from helpers import wait_until_blocking

from app.demo_rigs import RigProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and /proc")

LAUNCHER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from app.demo_rigs import start_rig_processes
    files = {Path(p).stem: Path(p) for p in sys.argv[1:]}
    procs = start_rig_processes(files, {name: None for name in files}, log_dir=Path(sys.argv[1]).parent)
    print(" ".join(str(p.pid) for p in procs.values()), flush=True)
    time.sleep(600)
""")


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    if Path("/proc/self/stat").exists():  # Linux: a zombie is still listed, with state Z
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (FileNotFoundError, ProcessLookupError):
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def rig_file(folder: Path, name: str, uri: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "uris": [uri]}), encoding="utf-8")
    return path


def test_rigs_exit_when_their_launcher_is_killed(tmp_path: Path) -> None:
    files = [rig_file(tmp_path, "one", "udp://127.0.0.1:0"), rig_file(tmp_path, "two", "tcp://127.0.0.1:0")]
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *map(str, files)], cwd=ROOT, env=cli_env(),
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    pids: list[int] = []
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and not any(gone(pid) for pid in pids), line
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        wait_until_blocking(lambda: all(gone(pid) for pid in pids), 20, "the rigs to exit after their launcher died")
    finally:
        launcher.kill()
        launcher.wait()
        for pid in pids:  # never leave a rig behind, whatever failed
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_rig_stops_cleanly_when_its_launcher_pipe_closes(tmp_path: Path) -> None:
    """The watched pipe (the mechanism where there is no parent-death signal), on its own: the launcher is
    alive, only the rig's stdin closes, and the rig shuts down as on SIGTERM."""
    proc = RigProcess("one", rig_file(tmp_path, "one", "udp://127.0.0.1:0"), tmp_path / "data", tmp_path / "one.log")
    try:
        proc.wait_ready()
        assert proc.proc.stdin is not None
        proc.proc.stdin.close()
        assert proc.proc.wait(20) == 0
    finally:
        proc.stop()
    assert proc.stopped_cleanly
    assert "launcher" in (tmp_path / "one.log").read_text()
