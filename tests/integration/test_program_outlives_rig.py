"""An acquisition program started by a rig does not outlive the rig: a ``rigdeck serve`` killed with SIGKILL
(no chance to stop its programs) takes the program with it, so the rig started again does not find its camera
or its acquisition software still held by a leftover. Real processes throughout."""

from __future__ import annotations

import datetime as _dt
import signal
import sys
from pathlib import Path

import e2e
import pytest
from helpers import wait_until_blocking
from rigprocs import rig_processes
from test_launcher_death import gone

from core.drivers.process import death_signal_prefix
from core.paths import session_folder

pytestmark = pytest.mark.skipif(not death_signal_prefix(), reason="needs Linux with util-linux setpriv")

PROGRAM = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"


def test_a_rig_killed_mid_session_takes_its_program_with_it(tmp_path: Path) -> None:
    rigs = {"sync": {"main_sync": True},
            "acq": {"drivers": {"commands": {"acquisition": {
                "run": [sys.executable, "-c", PROGRAM, "{session_path}/program.pid"], "start_on": "EXPSTART"}}}}}
    with rig_processes(tmp_path, rigs) as lab:
        ref = f"{_dt.date.today():%Y-%m-%d}_1_ORPHAN"
        pid_file = session_folder(lab.data_dir("acq"), ref) / "program.pid"
        run = e2e.start_cli("--rigs", str(lab.rigs_file), "--subject", "ORPHAN",
                            "--data-dir", str(tmp_path / "console"))
        try:
            wait_until_blocking(lambda: pid_file.is_file() and pid_file.read_text().strip(), 30,
                                "the acquisition program to start")
        finally:
            run.send_signal(signal.SIGKILL)
            run.communicate(timeout=20)
        program = int(pid_file.read_text())
        assert not gone(program)
        lab.kill("acq")  # SIGKILL: the rig cannot stop its program itself
        wait_until_blocking(lambda: gone(program), 10, "the program to end with its rig")
