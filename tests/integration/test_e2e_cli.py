"""``rigdeck run`` as a user drives it: Ctrl-C (SIGINT) stops a running session cleanly, and a second Ctrl-C
while a rig is slow to stop gives up without a traceback, saying how to finish the job (``--attach``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
from pathlib import Path

import e2e
from helpers import run, wait_until_blocking
from rigprocs import RigCluster, rig_processes

from app.commands.run import EXIT_INCIDENTS
from core.journal import read_description


def start_and_wait_running(args: list[str]) -> tuple[subprocess.Popen[str], e2e.LineReader]:
    """Start ``rigdeck run ... --json`` and wait for its '== running' progress line (on stderr)."""
    proc = e2e.start_cli(*args, "--json", merge_stderr=False)
    progress = e2e.LineReader(proc.stderr)
    wait_until_blocking(lambda: progress.seen("== running") or proc.poll() is not None, 20, "the session to run")
    assert proc.poll() is None, progress.lines
    return proc, progress


def finish(proc: subprocess.Popen[str], progress: e2e.LineReader) -> tuple[int, dict, list[str]]:
    """Wait for the console to exit: (exit code, its JSON summary, its progress lines)."""
    try:
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out
    return proc.returncode, json.loads(lines[0]), progress.rest()


def test_ctrl_c_stops_a_running_session_cleanly(lab: RigCluster, tmp_path: Path) -> None:
    names = ["sync", "cams"]
    rigs = lab.rigs_file_for(names, tmp_path / "remote_rigs.yaml")
    proc, progress = start_and_wait_running(["--rigs", str(rigs), "--subject", "CTRLC",
                                             "--data-dir", str(tmp_path / "console")])
    ref = f"{_dt.date.today():%Y-%m-%d}_1_CTRLC"
    wait_until_blocking(lambda: e2e.recording_started(lab, names, ref), 10, "every recorder to write")
    proc.send_signal(signal.SIGINT)
    code, summary, lines = finish(proc, progress)
    assert code == 0 and summary["ok"] and summary["outcome"] == "completed", (summary, lines)
    assert not any("Traceback" in line for line in lines)
    assert {n: r["status_name"] for n, r in summary["rigs"].items()} == {"sync": "STOPPED", "cams": "STOPPED"}
    assert e2e.kinds(e2e.journal(summary["journal"]), "phase")[-1]["phase"] == "stopped"
    assert summary["exp_ref"] == ref
    for name in names:
        e2e.check_recordings(lab, name, ref)
    # the report was written at the end; rigdeck report reads the session back by its exp_ref
    assert Path(summary["report"]).is_file()
    shown = subprocess.run([*e2e.cli_command()[:-1], "report", ref, "--data-dir", str(tmp_path / "console")],
                           capture_output=True, text=True, timeout=40, cwd=e2e.ROOT, env=e2e.cli_env())
    assert shown.returncode == 0, shown.stderr
    assert f"session {ref} (subject CTRLC): completed" in shown.stdout and "cams [aux]: final STOPPED" in shown.stdout


def test_second_ctrl_c_gives_up_waiting_and_says_how_to_finish(lab: RigCluster, tmp_path: Path) -> None:
    names = ["sync", "slowstop"]  # slowstop answers EXPEND after 3 s; the main-sync rig is stopped after it
    rigs = lab.rigs_file_for(names, tmp_path / "remote_rigs.yaml")
    data = str(tmp_path / "console")
    proc, progress = start_and_wait_running(["--rigs", str(rigs), "--subject", "GIVEUP", "--data-dir", data])
    proc.send_signal(signal.SIGINT)
    wait_until_blocking(lambda: progress.seen("rigdeck run: SIGINT: stopping"), 10, "the first SIGINT to be taken")
    proc.send_signal(signal.SIGINT)
    code, summary, lines = finish(proc, progress)
    assert code == 130 and not summary["ok"], (summary, lines)
    assert not any("Traceback" in line for line in lines), lines
    ref = summary["exp_ref"]
    assert f"rigdeck run --attach {ref} --stop --data-dir {data}" in summary["error"]
    assert run(e2e.rig_status(lab.specs["sync"])) == 20  # the main-sync rig was never told to stop
    assert e2e.kinds(e2e.journal(summary["journal"]), "note", text="stop cancelled")

    code, summary, _ = e2e.run_cli("--attach", ref, "--stop", "--data-dir", data)  # what the message says to do
    assert code == 0 and summary["phase"] == "stopped", summary
    assert run(e2e.rig_status(lab.specs["sync"])) == 30


def test_a_rig_killed_during_a_run_is_an_incident_and_a_distinct_exit_code(tmp_path: Path) -> None:
    rigs = {"sync": {"main_sync": True, "drivers": {"recorders": {"nidq": {"kind": "ephys", "rate": 200}}}},
            "cams": {"uris": ["zmq://127.0.0.1:0"], "drivers": {"recorders": {"left": {"kind": "camera", "rate": 30}}}}}
    with rig_processes(tmp_path / "lab", rigs) as cluster:
        proc, progress = start_and_wait_running(["--rigs", str(cluster.rigs_file), "--subject", "LOST",
                                                 "--data-dir", str(tmp_path / "console")])
        os.kill(cluster.procs["cams"].pid, signal.SIGKILL)  # the rig crashes mid-session
        told = lambda: progress.seen("") and any("cams" in ln and "link unreachable" in ln for ln in progress.lines)  # noqa: E731
        wait_until_blocking(lambda: told() or proc.poll() is not None, 20, "the loss")
        proc.send_signal(signal.SIGINT)
        code, summary, lines = finish(proc, progress)
    assert code == EXIT_INCIDENTS, (summary, lines)
    (incident,) = summary["incidents"]
    assert (incident["rig"], incident["kind"], incident["to"]) == ("cams", "link_lost", None)
    assert incident["from"] >= e2e.kinds(e2e.journal(summary["journal"]), "phase", phase="running")[0]["t"]
    assert read_description(Path(summary["description"]))["incidents"] == summary["incidents"]
    journaled = e2e.kinds(e2e.journal(summary["journal"]), "incident")
    assert [(r["rig"], r["incident"], r["from"]) for r in journaled] == [("cams", "link_lost", incident["from"])]
