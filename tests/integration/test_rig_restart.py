"""A rig killed (kill -9) during a session and started again: it closes the recordings its previous run left
open as truncated, and the console that comes to stop the session says so in plain words instead of a bare
"did not confirm the stop". Real processes throughout: ``rigdeck run``, ``rigdeck serve``, kill -9."""

from __future__ import annotations

import datetime as _dt
import re
import signal
from pathlib import Path

import e2e
import yaml
from helpers import wait_until_blocking
from rigprocs import rig_processes

from app.demo_rigs import RigProcess
from core.drivers.recorder import clock_text
from core.unfinished import restart_note

RIGS = {
    "sync": {"main_sync": True, "drivers": {"recorders": {"nidq": {"kind": "ephys", "rate": 500, "frame_size": 8}}}},
    "cams": {"drivers": {"recorders": {"left": {"kind": "camera", "rate": 60}}}},
}


def test_a_restarted_rig_ends_its_recording_as_truncated_and_the_console_says_so(tmp_path: Path) -> None:
    with rig_processes(tmp_path, RIGS) as lab:
        console_dir = str(tmp_path / "console")
        run = e2e.start_cli("--rigs", str(lab.rigs_file), "--subject", "RESTART", "--data-dir", console_dir)
        ref = f"{_dt.date.today():%Y-%m-%d}_1_RESTART"
        try:
            wait_until_blocking(lambda: e2e.recording_started(lab, list(RIGS), ref), 30, "every recorder to write")
        finally:
            run.send_signal(signal.SIGKILL)  # the console dies too: the session is left running for --attach
            run.communicate(timeout=20)

        lab.kill("cams")
        (left, (_, torn)), = lab.recordings("cams", ref).items()
        assert not torn["complete"] and torn["truncated_at"] is None  # what kill -9 leaves: no end
        pinned = tmp_path / "cams-again.rig.yaml"  # the same rig on the same port, as an operator restarts it
        pinned.write_text(yaml.safe_dump({"name": "cams", **RIGS["cams"], "uris": [lab.uri("cams")]}))
        again = lab.procs["cams"] = RigProcess("cams", pinned, lab.data_dir("cams"), tmp_path / "cams-again.log")
        assert again.wait_ready() == [lab.uri("cams")]

        code, summary, stderr = e2e.run_cli("--attach", ref, "--stop", "--data-dir", console_dir)

        (path, (frames, info)), = lab.recordings("cams", ref).items()
        assert path == left and info["complete"] and info["footer"]["truncated"]
        assert info["truncated_at"] == frames[-1].timestamp
        ended = clock_text(info["truncated_at"])
        assert info["warning"] == f"truncated at {ended} (rig restarted during the session)"
        words = f"cams: rig restarted during the session; its recording ended at {ended}"
        assert summary["error"] == words, (summary, stderr)
        assert code == 3  # a rig in error during the session: its incident says why
        assert [(i["rig"], i["kind"], restart_note(i["detail"])) for i in summary["incidents"]] == \
            [("cams", "rig_error", words.removeprefix("cams: "))]
        assert words in stderr  # the progress lines say it as it happens, too
        assert "did not confirm" not in summary["error"] and "Traceback" not in stderr
        assert summary["rigs"]["sync"]["outcome"] == "ok"
        e2e.check_recordings(lab, "sync", ref)  # the rig that stayed up closed its file cleanly
        assert re.search(r"rig restarted during the session; its recording ended at \d\d:\d\d:\d\d "
                         rf"\(session {ref}; closed as truncated: left\.camera\.rdrec\)",
                         (tmp_path / "cams-again.log").read_text())
