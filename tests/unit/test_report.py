"""The session report: built from journals real sessions wrote (in-memory rigs, a real sio manipulator rig),
saved as JSON + HTML beside the journal, and read back by ``rigdeck report``."""

import asyncio
import hashlib
import json

import pytest
from fake_rigs import FakeLink, FakeRig, make_rigs
from helpers import wait_until
from sio_helpers import LOOPBACK, served

from app import cli
from app.console import Console
from app.report_html import files_text, render_html, save_report
from core.drivers.manipulator import Vec4
from core.journal import JOURNAL_NAME
from core.link import LinkState
from core.monitor import LINK_LOST, RIG_ERROR
from core.report import REPORT_HTML, REPORT_JSON, SUMS_NAME, build_report
from core.session import Session
from transports.registry import make_link

REF = "2026-11-22_1_KS001"


def session_with_trouble(tmp_path, names=("sync", "cam", "ephys")):
    """sync + cam run a whole session; cam loses its link and gets it back while running; ephys refuses
    EXPSTART and is dropped (policy continue). Returns the session (closed) and the rigs' names."""
    rigs, links = make_rigs(*names, main="sync", exp_ref=REF)
    sync, cam, ephys = names

    async def main():
        s = Session(links, subject="KS001", data_dir=tmp_path, timeout=0.2, policy="continue")
        rigs[ephys].faults["EXPSTART"] = "error"
        await s.open()
        assert (await s.info()).ok and (await s.init()).ok
        assert (await s.start()).ok and s.degraded
        links[cam].set_state(LinkState.UNREACHABLE, "cable <pulled>")
        links[cam].set_state(LinkState.ONLINE)
        assert (await s.stop()).ok
        await s.close()
        return s

    return asyncio.run(main())


def test_report_of_a_session_with_an_incident_and_a_dropped_rig(tmp_path):
    s = session_with_trouble(tmp_path)
    report = build_report(s.folder)
    assert report["exp_ref"] == REF and report["subject"] == "KS001" and report["main_sync"] == "sync"
    assert report["outcome"] == "completed_with_errors" and report["degraded"] and report["phase"] == "stopped"
    assert report["started"] <= report["ended"]
    rigs = report["rigs"]
    assert {n: r["role"] for n, r in rigs.items()} == {"sync": "main_sync", "cam": "aux", "ephys": "aux"}
    assert [(st["step"], st["outcome"]) for st in rigs["sync"]["steps"]] == [
        ("info", "ok"), ("init", "ok"), ("start", "ok"), ("stop", "ok")]
    assert all(st["start"] <= st["end"] for st in rigs["sync"]["steps"])
    # the main-sync rig started first and stopped last
    assert rigs["sync"]["steps"][2]["end"] <= rigs["cam"]["steps"][2]["start"]
    assert rigs["cam"]["steps"][3]["end"] <= rigs["sync"]["steps"][3]["start"]
    assert [st["name"] for st in rigs["cam"]["statuses"]] == ["CONNECTED", "INITIALIZED", "RUNNING", "STOPPED"]
    assert rigs["sync"]["final_status"] == "STOPPED"
    (lost,) = rigs["cam"]["incidents"]  # written open, then closed: one incident
    assert lost["kind"] == LINK_LOST and lost["detail"] == "cable <pulled>" and lost["to"] >= lost["from"]
    assert [link["state"] for link in rigs["cam"]["links"]][-2:] == ["unreachable", "online"]
    ephys = rigs["ephys"]
    assert not ephys["participating"] and ephys["final_status"] == "INITIALIZED"
    assert ephys["steps"][-1]["step"] == "start" and ephys["steps"][-1]["outcome"] == "error"
    assert "refused" in ephys["steps"][-1]["error"]
    assert [i["kind"] for i in ephys["incidents"]] == [RIG_ERROR]
    assert any("continuing without ephys" in n["text"] for n in report["notes"])
    # udp rigs without a file endpoint copy their own data (as iblrig does): no transfer, not an error
    assert {r["files"]["state"] for r in rigs.values()} == {"no transfer"} and "file endpoint" in \
        rigs["sync"]["files"]["error"]
    json.dumps(report, allow_nan=False)  # the JSON file takes it as is


def test_files_verified_from_the_sums_the_transfer_left(tmp_path):
    s = session_with_trouble(tmp_path)
    cam = s.folder / "cam"
    (cam / "raw").mkdir(parents=True)
    blobs = {"raw/video.bin": b"\x00" * 5000, "events.json": b"{}"}
    for rel, data in blobs.items():
        (cam / rel).write_bytes(data)
    (cam / SUMS_NAME).write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {r}\n" for r, d in blobs.items()))
    sync = s.folder / "sync"
    sync.mkdir()
    (sync / SUMS_NAME).write_text(f"{'0' * 64}  gone.bin\n")
    rigs = build_report(s.folder)["rigs"]
    assert rigs["cam"]["files"] | {"at": None} == {"state": "verified", "files": 2, "bytes": 5002, "verified": True,
                                                    "at": None, "missing": [], "error": None}
    assert rigs["sync"]["files"]["verified"] is False and rigs["sync"]["files"]["missing"] == ["gone.bin"]
    assert files_text(rigs["cam"]["files"]) == "2 files, 4.9 KiB, verified"
    assert rigs["ephys"]["files"]["state"] == "no transfer"


def test_files_gathered_elsewhere_and_a_failed_transfer_from_the_transfer_record(tmp_path):
    """With --to DIR the rig folders are not beside the journal: the transfer's record says where they went
    and how far each rig got."""
    s = session_with_trouble(tmp_path)
    to = tmp_path / "lab-server" / "KS001" / "2026-11-22" / "001"
    (to / "cam").mkdir(parents=True)
    (to / "cam" / "a.bin").write_bytes(b"abc")
    (to / "cam" / SUMS_NAME).write_text(f"{hashlib.sha256(b'abc').hexdigest()}  a.bin\n")
    record = {"version": 1, "exp_ref": REF, "to": str(to), "rigs": {
        "cam": {"state": "verified", "files": {"a.bin": {"size": 3, "sha256": "x", "verified": True}}},
        "sync": {"state": "failed", "error": "the destination disk is full",
                 "files": {"a": {"size": 10, "sha256": "x", "verified": True},
                           "b": {"size": 20, "sha256": "y", "verified": False}}},
        "ephys": {"state": "skipped", "skipped": "no transfer: transfer: false in the rigs file"}}}
    (s.folder / "_rigdeck_transfer.json").write_text(json.dumps(record))
    files = {n: r["files"] for n, r in build_report(s.folder)["rigs"].items()}
    assert files["cam"]["verified"] and files["cam"]["bytes"] == 3
    assert files["sync"]["state"] == "failed" and not files["sync"]["verified"] and files["sync"]["bytes"] == 30
    assert files_text(files["sync"]) == "transfer failed: the destination disk is full (2 files, 30 bytes)"
    assert files["ephys"]["state"] == "no transfer" and "transfer: false" in files_text(files["ephys"])


def test_html_escapes_hostile_rig_names_and_errors_and_runs_nothing(tmp_path):
    hostile = '<img src=x onerror="alert(1)">'
    s = session_with_trouble(tmp_path, names=("sync", hostile, "<script>alert(2)</script>"))
    report = save_report(s.folder)
    page = (s.folder / REPORT_HTML).read_text()
    assert hostile not in page and "<script" not in page.lower() and "cable <pulled>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page and "cable &lt;pulled&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert json.loads((s.folder / REPORT_JSON).read_text())["rigs"].keys() == report["rigs"].keys()
    assert not list(s.folder.glob(".*.tmp"))  # the temp files were renamed over the targets


def test_a_torn_journal_still_gives_a_report_that_says_so(tmp_path):
    s = session_with_trouble(tmp_path)
    with open(s.folder / JOURNAL_NAME, "ab") as f:
        f.write(b'{"seq": 999, "kind": "rep')  # a console killed mid-line
    report = build_report(s.folder)
    assert report["rigs"]["sync"]["final_status"] == "STOPPED"
    assert any("torn" in p for p in report["problems"]) and "torn" in render_html(report)


def test_rigdeck_run_leaves_a_report_and_rigdeck_report_reads_it(tmp_path, monkeypatch, capsys):
    from app.commands import run as run_cmd

    rigs = {n: FakeRig(n, main_sync=(n == "sync")) for n in ("sync", "cam")}
    monkeypatch.setattr(run_cmd, "LINK_FACTORY", lambda spec: FakeLink(rigs[spec.name], spec.uri))
    rigs_file = tmp_path / "rigs.yaml"
    rigs_file.write_text("sync: udp://127.0.0.1:9001\ncam: udp://127.0.0.1:9002\n")
    data = tmp_path / "data"
    assert cli.main(["run", "--rigs", str(rigs_file), "--subject", "KS001", "--duration", "0.01",
                     "--data-dir", str(data), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    folder = tmp_path / summary["folder"]
    assert summary["report"] == str(folder / REPORT_HTML) and (folder / REPORT_JSON).is_file()
    exp_ref = summary["exp_ref"]

    assert cli.main(["report", exp_ref, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"session {exp_ref} (subject KS001): completed" in out
    assert "sync [main_sync]: final STOPPED" in out and "files: no transfer (no file endpoint" in out
    assert "EXPSTART" in out

    page = tmp_path / "elsewhere.html"
    assert cli.main(["report", exp_ref, "--data-dir", str(data), "--json", "--html", str(page)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exp_ref"] == exp_ref and set(report["rigs"]) == {"sync", "cam"} and page.is_file()

    assert cli.main(["report", "2026-01-01_1_KS001", "--data-dir", str(data)]) == 2
    assert "no session journal" in capsys.readouterr().err


def test_console_journals_probe_moves_and_writes_the_report_when_the_session_ends(tmp_path):
    """A real sio manipulator rig beside in-memory session rigs: moves made through the console during the
    session are in its journal, hence in the report (with a depth trace), which the stop wrote."""
    rigs = {n: FakeRig(n, main_sync=(n == "sync")) for n in ("sync", "cam")}

    async def main():
        async with served(ids=("1",)) as (server, _sim):
            path = tmp_path / "rigs.yaml"
            path.write_text("sync: udp://127.0.0.1:9001\ncam: udp://127.0.0.1:9002\n"
                            f"probes: {{uri: 'sio://{LOOPBACK}:{server.port}', role: manipulator}}\n")
            console = Console(tmp_path / "data", timeout=1.0, poll_interval=0.05,
                              link_factory=lambda spec: FakeLink(rigs[spec.name], spec.uri) if spec.name in rigs
                              else make_link(spec))
            await console.load(path)
            await wait_until(lambda: console.state.get(["rigs", "probes", "service", "manipulators", "1"]) is not None)
            await console.move("probes", "1", Vec4(1.0, 1.0, 1.0, 0.5), 50.0)  # before the session: no journal
            assert (await console.start("KS001")).ok
            await console.move("probes", "1", Vec4(2.0, 2.0, 2.0, 1.5), 50.0)
            await console.set_depth("probes", "1", 3.0, 50.0)
            assert (await console.stop()).ok
            folder = console.session.folder
            await console.close()
            return folder

    folder = asyncio.run(asyncio.wait_for(main(), 30))
    report = json.loads((folder / REPORT_JSON).read_text())
    moves = report["moves"]
    assert [(m["rig"], m["manipulator"], m["action"], m["outcome"]) for m in moves] == [
        ("probes", "1", "move", "reached"), ("probes", "1", "depth", "reached")]
    assert moves[0]["before"]["w"] == pytest.approx(0.5) and moves[0]["reached"]["w"] == pytest.approx(1.5)
    assert moves[1]["reached"] == pytest.approx(3.0)
    trace = report["depth"]["probes/1"]
    assert [round(d, 3) for _, d in trace] == [0.5, 1.5, 1.5, 3.0] and trace == sorted(trace)
    assert "probes" not in report["rigs"]  # a manipulator rig takes no session messages: no lane of steps
    assert "Manipulator moves" in (folder / REPORT_HTML).read_text()


def test_a_damaged_or_hand_edited_journal_gives_a_report_not_a_traceback(tmp_path, capsys):
    s = session_with_trouble(tmp_path)
    odd = [
        {"kind": "session", "rigs": {"../../x": {"uri": 5}, "cam": "not a dict"}, "participants": "sync"},
        {"kind": "phase", "phase": {"a": 1}, "t": "noon"},
        {"kind": "incident", "rig": "cam", "incident": ["x"], "from": "yesterday", "to": True},
        {"kind": "rollback", "step": "start", "failed": 3},
        {"kind": "reply", "rig": "sync", "step": "stop", "event": "EXPEND", "status": 99, "rtt_ms": None, "t": 1e300},
        {"kind": "move", "rig": "probes", "manipulator": 1, "before": "deep", "reached": {"w": "x"}, "from": []},
        {"kind": "status", "rig": "cam", "status": True},
        {"kind": "phase", "phase": "stopped", "t": None},
    ]
    with open(s.folder / JOURNAL_NAME, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in odd) + "[1, 2]\nnot json\n")
    report = save_report(s.folder)  # JSON + page written
    assert report["rigs"]["sync"]["steps"][-1]["status"] == 99 and report["rigs"]["../../x"]["files"]["state"] == \
        "no transfer"
    assert len(report["problems"]) == 2 and report["phase"] == "stopped"
    from app.timeline_spans import lanes

    assert [lane.rig for lane in lanes(report)][:3] == ["sync", "cam", "ephys"]
    assert cli.main(["report", str(s.folder)]) in (0, 1)  # a folder path works too
    assert "journal problem" in capsys.readouterr().out
