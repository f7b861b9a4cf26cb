"""``rigdeck transfer`` against real ``rigdeck serve`` processes: a zmq:// rig and a udp:// rig with a
files-only endpoint. kill -9 of the console or of a rig mid-transfer, then run again: exactly the missing
bytes are fetched. A destination that refuses to grow a file is a plain error with nothing verified; a
destination on another filesystem works; ``rigdeck demo`` + ``rigdeck run --transfer`` ends with every
demo rig's files verified in one folder that ``sha256sum -c`` accepts."""

from __future__ import annotations

import datetime as _dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import e2e
import pytest
import yaml
from helpers import wait_until_blocking
from rigprocs import RigCluster, rig_processes

from app.demo_rigs import RigProcess, start_demo_rigs
from core.paths import session_folder
from transports.zmq.files import MARK_NAME, PART_SUFFIX

REF = "2026-11-30_1_KS001"
MIB = 1024 * 1024
RIGS = {
    "cams": {"uris": ["zmq://127.0.0.1:0"]},
    "sync": {"uris": ["udp://127.0.0.1:0", {"uri": "zmq://127.0.0.1:0", "files_only": True}]},
}
FILES = {"cams": {"raw_video_data/left.bin": 6 * MIB, "raw_video_data/right.bin": 4 * MIB, "log.txt": 1000},
         "sync": {"raw_ephys_data/nidq.bin": 6 * MIB, "raw_ephys_data/sync.bin": 3 * MIB}}


def rigs_file(cluster: RigCluster, path: Path) -> Path:
    entries = {"cams": {"uri": cluster.uris["cams"][0]},
               "sync": {"uri": cluster.uris["sync"][0], "files": cluster.uris["sync"][1]}}
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    return path


def make_session_files(cluster: RigCluster) -> dict[str, int]:
    totals = {}
    for name, files in FILES.items():
        folder = cluster.session_dir(name, REF)
        for rel, size in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(os.urandom(size))
        totals[name] = sum(files.values())
    return totals


def transfer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", "transfer", *args]


def transfer(*args: str, **kwargs) -> tuple[int, dict]:
    proc = subprocess.run(transfer_cmd(*args, "--json"), capture_output=True, text=True, timeout=90, cwd=e2e.ROOT,
                          env=e2e.cli_env(), stdin=subprocess.DEVNULL, **kwargs)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, (proc.stdout, proc.stderr[-3000:])
    return proc.returncode, json.loads(lines[0])


def on_disk(dest: Path) -> int:
    """Bytes of a rig's files already at the destination (complete files and .part files)."""
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and p.name not in ("SHA256SUMS",)
               and not p.name.startswith("."))


def check_sums(folder: Path) -> None:
    done = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def kill_when_partly_there(args: list[str], dests: list[Path], at_least: int) -> None:
    """Start a paced transfer, SIGKILL it once every destination holds ``at_least`` bytes."""
    proc = subprocess.Popen(transfer_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=e2e.ROOT, env=e2e.cli_env(), stdin=subprocess.DEVNULL)
    try:
        wait_until_blocking(lambda: all(d.is_dir() and on_disk(d) >= at_least for d in dests)
                            or proc.poll() is not None, 60, "the transfer to be under way")
        assert proc.poll() is None, "the paced transfer finished before it could be killed"
    finally:
        proc.kill()
        proc.wait()


needs_sha256sum = pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")


@needs_sha256sum
def test_kill_9_of_console_then_of_a_rig_mid_transfer_then_only_missing_bytes_are_fetched(tmp_path):
    with rig_processes(tmp_path, RIGS) as cluster:
        totals = make_session_files(cluster)
        rigs = rigs_file(cluster, tmp_path / "remote_rigs.yaml")
        console = tmp_path / "console"
        dest = session_folder(console, REF)
        common = [REF, "--rigs", str(rigs), "--data-dir", str(console)]
        # 1. the console dies (kill -9) with both rigs' files partly there
        kill_when_partly_there([*common, "--max-rate", "4"], [dest / "cams", dest / "sync"], 2 * MIB)
        before = {name: on_disk(dest / name) for name in totals}
        assert all(0 < before[n] < totals[n] for n in totals), before
        assert any(p.name.endswith(PART_SUFFIX) for p in dest.rglob("*"))
        # 2. again, and this time the zmq rig dies (kill -9) mid-transfer; the console is killed too
        kill_when_partly_there([*common, "--max-rate", "4"], [dest / "cams"], before["cams"] + MIB)
        cluster.kill("cams")
        rig_file = tmp_path / "rigprocs" / "cams.rig.yaml"
        restarted = RigProcess("cams", rig_file, cluster.data_dir("cams"))
        try:
            restarted.wait_ready(30)
            entries = yaml.safe_load(rigs.read_text())
            entries["cams"]["uri"] = restarted.uris[0]
            rigs.write_text(yaml.safe_dump(entries))
            middle = {name: on_disk(dest / name) for name in totals}
            assert middle["cams"] > before["cams"]
            # 3. run again: exactly what was missing crosses the wire, and everything is verified
            code, summary = transfer(*common)
        finally:
            restarted.stop()
    assert code == 0, summary
    for name, total in totals.items():
        rig = summary["rigs"][name]
        assert rig["verified"] and rig["error"] is None and rig["bytes"] == total
        assert rig["fetched_bytes"] == total - middle[name], (name, rig, middle)
        check_sums(dest / name)
        assert not any(p.name.endswith(PART_SUFFIX) for p in (dest / name).rglob("*"))
    for name in totals:
        mark = json.loads((cluster.session_dir(name, REF) / MARK_NAME).read_text())
        assert set(mark["files"]) == set(FILES[name])


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MIB, 2 * MIB))


@needs_sha256sum
def test_a_destination_that_cannot_grow_a_file_is_a_plain_error_and_another_filesystem_works(tmp_path):
    with rig_processes(tmp_path, RIGS) as cluster:
        totals = make_session_files(cluster)
        rigs = rigs_file(cluster, tmp_path / "remote_rigs.yaml")
        console = tmp_path / "console"
        code, full = transfer(REF, "--rigs", str(rigs), "--data-dir", str(console), preexec_fn=_limit_file_size)
        dest = session_folder(console, REF)
        unverified = {name: (dest / name / "SHA256SUMS").exists() for name in totals}
        marks = {name: (cluster.session_dir(name, REF) / MARK_NAME).exists() for name in totals}
        shm = Path("/dev/shm")
        other = None
        if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
            target = Path(shm / f"rigdeck-test-{os.getpid()}")
            try:
                other = transfer(REF, "--rigs", str(rigs), "--data-dir", str(tmp_path / "c2"), "--to", str(target))
                other_dest = session_folder(target, REF)
                for name in totals:
                    check_sums(other_dest / name)
            finally:
                shutil.rmtree(target, ignore_errors=True)
    assert code == 1
    for name in totals:
        assert not full["rigs"][name]["verified"]
        assert "file size limit or disk full" in full["rigs"][name]["error"], full
    assert unverified == {"cams": False, "sync": False} and marks == {"cams": False, "sync": False}
    if other is not None:
        assert other[0] == 0 and all(r["verified"] for r in other[1]["rigs"].values()), other


@needs_sha256sum
def test_demo_and_run_transfer_gather_every_demo_rig_into_one_verified_folder(tmp_path):
    demo = start_demo_rigs(tmp_path / "demo")
    try:
        code, summary, err = e2e.run_cli("--rigs", str(demo.rigs_file), "--subject", "DEMO", "--duration", "1",
                                         "--data-dir", str(tmp_path / "console"), "--transfer", timeout=90)
        pending = subprocess.run(transfer_cmd("--pending", "--data-dir", str(tmp_path / "console"), "--json"),
                                 capture_output=True, text=True, timeout=60, cwd=e2e.ROOT, env=e2e.cli_env())
    finally:
        demo.stop()
    assert code == 0 and summary["ok"], (summary, err[-2000:])
    transfer_summary = summary["transfer"]
    ref = f"{_dt.date.today():%Y-%m-%d}_1_DEMO"
    assert transfer_summary["exp_ref"] == ref
    assert transfer_summary["to"] == str(session_folder(tmp_path / "console", ref))
    assert set(transfer_summary["rigs"]) == {"sync", "cameras", "ephys"}  # the manipulator rig takes no session
    for name, rig in transfer_summary["rigs"].items():
        assert rig["verified"] and rig["files"] >= 2 and rig["error"] is None, (name, rig)
        folder = Path(transfer_summary["to"]) / name
        recorded = [p for p in folder.rglob("*") if p.is_file() and p.parent.name.startswith("raw_")]
        assert recorded and all(p.stat().st_size > 0 for p in recorded), (name, recorded)  # the recorders' data
        check_sums(folder)
    assert pending.returncode == 0 and json.loads(pending.stdout) == {"sessions": []}
