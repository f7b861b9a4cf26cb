"""End to end when things die: a rig killed mid-session, a console killed mid-session, and an iblutil
client (not RigDeck's console) driving a real ``rigdeck serve`` process."""

from __future__ import annotations

import datetime as _dt
import logging
import signal
from pathlib import Path

import pytest
from e2e import LineReader, check_recordings, console, journal, kinds, recording_started, rig_status, run_cli, start_cli
from helpers import run, wait_until, wait_until_blocking
from rigprocs import RigCluster, rig_processes

from core.drivers.recorder import read_recording
from core.journal import find_unfinished, load_session, read_description
from core.monitor import LINK_LOST
from core.report import build_report
from core.session import Phase


def test_a_rig_killed_mid_session_turns_unreachable_and_stop_still_stops_the_others(tmp_path: Path) -> None:
    rigs = {
        "sync": {"main_sync": True, "drivers": {"recorders": {"nidq": {"kind": "ephys", "rate": 500}}}},
        "cams": {"drivers": {"recorders": {"left": {"kind": "camera", "rate": 60}}}},
        "ephys": {"drivers": {"recorders": {"probe00": {"kind": "ephys", "rate": 1000}}}},
    }
    with rig_processes(tmp_path / "rigs", rigs) as cluster:
        # a short timeout for the rig that dies keeps the test quick (the healthy ones keep the default, so
        # a loaded machine cannot fail them); polling every 0.2 s is what notices the dead rig
        specs = cluster.specs_for(list(rigs), options={"cams": {"timeout": 1.0}})

        async def main() -> tuple:
            async with console(specs, tmp_path / "console", subject="KILL", poll_interval=0.2) as session:
                for step in (session.info, session.init, session.start):
                    assert (await step()).ok, step.__name__
                ref = session.exp_ref
                await wait_until(lambda: recording_started(cluster, ["cams"], ref), 10, "cams to write frames")
                cluster.kill("cams")  # SIGKILL: no footer, the socket just vanishes
                await wait_until(lambda: session.state.get(["rigs", "cams", "link"]) == "unreachable", 10,
                                 "cams to turn unreachable in the live state")
                stopped = await session.stop()
                return ref, stopped, session.journal_path, session.description_path, session.phase

        ref, stopped, journal_path, description, phase = run(main())
        assert phase is Phase.STOPPED and not stopped.ok and stopped.failed == ["cams"]
        assert {n: o.status for n, o in stopped.outcomes.items() if o.ok} == {"sync": 30, "ephys": 30}
        assert stopped.outcomes["cams"].result in ("timeout", "error")
        assert run(rig_status(cluster.specs["ephys"])) == 30 and run(rig_status(cluster.specs["sync"])) == 30

        records = journal(journal_path)
        assert kinds(records, "link", rig="cams", state="unreachable")
        assert kinds(records, stopped.outcomes["cams"].result, rig="cams", event="EXPEND")
        assert any("cams" in r["text"] for r in kinds(records, "note"))
        desc = read_description(description)
        assert desc["outcome"] == "completed_with_errors" and desc["rigs"]["sync"]["status"] == "STOPPED"
        # the killed rig's file is still readable: complete chunks kept, the missing footer reported
        ((path, (frames, info)),) = cluster.recordings("cams", ref).items()
        assert not info["complete"] and frames and [f.index for f in frames] == list(range(len(frames)))
        assert read_recording(path, with_data=False)[1]["frames"] == len(frames)
        for name in ("sync", "ephys"):
            for _, (_, other) in cluster.recordings(name, ref).items():
                assert other["complete"]
        # the session report tells the same story from the journal alone
        report = build_report(journal_path)
        cams = report["rigs"]["cams"]
        assert report["outcome"] == "completed_with_errors" and report["rigs"]["sync"]["role"] == "main_sync"
        assert [(i["kind"], i["from"] is not None) for i in cams["incidents"]][:1] == [(LINK_LOST, True)]
        assert cams["steps"][-1]["event"] == "EXPEND" and cams["steps"][-1]["outcome"] in ("timeout", "error")
        assert cams["final_link"] == "unreachable" and cams["final_status"] == "RUNNING"
        assert {n: r["final_status"] for n, r in report["rigs"].items() if n != "cams"} == {"sync": "STOPPED",
                                                                                          "ephys": "STOPPED"}


def test_reattach_after_the_console_is_killed(lab: RigCluster, tmp_path: Path) -> None:
    names = ["sync", "cams"]
    rigs = lab.rigs_file_for(names, tmp_path / "remote_rigs.yaml")
    data = tmp_path / "console"
    proc = start_cli("--rigs", str(rigs), "--subject", "ATT", "--data-dir", str(data))
    try:
        reader = LineReader(proc.stdout)
        wait_until_blocking(lambda: reader.seen("== running") or proc.poll() is not None, 20, "the console to run")
        assert proc.poll() is None, reader.lines
        proc.send_signal(signal.SIGKILL)  # the console dies: no stop, no journal footer
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    ref = f"{_dt.date.today():%Y-%m-%d}_1_ATT"
    (unfinished,) = find_unfinished(data)
    assert (unfinished.exp_ref, unfinished.phase, unfinished.participants) == (ref, "running", names)
    specs = lab.specs_for(names)
    assert {n: run(rig_status(spec)) for n, spec in specs.items()} == {"sync": 20, "cams": 20}  # still recording

    code, summary, stderr = run_cli("--attach", ref, "--stop", "--data-dir", str(data))
    assert code == 0, (summary, stderr[-2000:])
    assert summary["exp_ref"] == ref and summary["phase"] == "stopped" and summary["outcome"] == "completed"
    assert {n: run(rig_status(spec)) for n, spec in specs.items()} == {"sync": 30, "cams": 30}
    after = load_session(summary["journal"])
    assert after.finished and find_unfinished(data) == []
    records = journal(summary["journal"])
    attach = kinds(records, "attach")
    assert len(attach) == 1 and attach[0]["previous_phase"] == "running"
    assert [r["rig"] for r in kinds(records, "reply", event="EXPEND")] == ["cams", "sync"]  # main sync last
    assert read_description(summary["description"])["outcome"] == "completed"
    for name in names:
        check_recordings(lab, name, ref)


def test_an_unmodified_iblutil_client_runs_a_session_against_rigdeck_serve(lab: RigCluster) -> None:
    net_app = pytest.importorskip("iblutil.io.net.app")
    net_base = pytest.importorskip("iblutil.io.net.base")
    quiet = logging.getLogger("iblutil-e2e")

    async def main() -> str:
        clients = [await net_app.EchoProtocol.client(lab.uri(name), name=name, log=quiet) for name in ("sync", "cams")]
        services = net_app.Services(clients, timeout=5)
        try:
            info = await services.info(net_base.ExpStatus.CONNECTED, {"subject": "IBL", "main_sync": False})
            ref = info["sync"][1]["exp_ref"]  # the main-sync rig hands out the reference
            assert ref == f"{_dt.date.today():%Y-%m-%d}_1_IBL" and info["sync"][1]["main_sync"] is True
            assert info["cams"][1]["main_sync"] is False and info["cams"][1]["exp_ref"] is None
            assert await services.init({"exp_ref": ref}) == {n: [{"status": 10, "exp_ref": ref}] for n in info}
            assert await services.start(ref) == {n: [ref, {"status": 20}] for n in info}
            assert await services.status(net_base.ExpStatus.RUNNING) == {n: [20] for n in info}
            await wait_until(lambda: recording_started(lab, ["sync", "cams"], ref), 10, "recordings")
            stopped = await services.stop([])
            assert {n: reply[0]["status"] for n, reply in stopped.items()} == {"sync": 30, "cams": 30}
            assert all(client.is_connected for client in clients)  # no echo went missing: iblutil stayed up
            return ref
        finally:
            services.close()

    ref = run(main())
    for name in ("sync", "cams"):
        check_recordings(lab, name, ref)
