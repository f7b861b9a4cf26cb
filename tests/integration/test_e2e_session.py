"""End to end with real ``rigdeck serve`` processes on loopback: whole sessions, policies, main sync, numbering.

The unit tests (tests/unit/test_session.py) check every engine rule against in-memory rigs; these check
that the pieces agree across process boundaries: console engine + UDP links + rig services + drivers
+ files on disk (journal, experiment description, recorder files).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from e2e import check_recordings, console, journal, kinds, recording_started, rig_status, run_cli
from helpers import run, wait_until
from rigprocs import RigCluster

from core.drivers.recorder import read_recording
from core.journal import read_description
from core.protocol import ExpStatus
from core.session import Phase

SESSION_EVENTS = ("EXPINFO", "EXPINIT", "EXPSTART", "EXPEND")


def today_ref(number: int, subject: str) -> str:
    return f"{_dt.date.today():%Y-%m-%d}_{number}_{subject}"


def test_full_session_four_rigs_through_the_cli(lab: RigCluster, tmp_path: Path) -> None:
    names = ["sync", "cams", "ephys", "mic"]
    rigs = lab.rigs_file_for(names, tmp_path / "remote_rigs.yaml")
    code, summary, stderr = run_cli("--rigs", str(rigs), "--subject", "FULL", "--duration", "1",
                                    "--poll", "0.2", "--data-dir", str(tmp_path / "console"))
    assert code == 0, (summary, stderr[-2000:])
    ref = today_ref(1, "FULL")
    assert summary["exp_ref"] == ref and summary["ok"] and summary["outcome"] == "completed"
    assert summary["main_sync"] == "sync"
    assert {n: (r["outcome"], r["status_name"], r["link"]) for n, r in summary["rigs"].items()} == \
        {n: ("ok", "STOPPED", "online") for n in names}
    for name in names:  # live progress went to stderr, one line per rig and step
        assert f"start     {name}" in stderr and f"stop      {name}" in stderr

    # the journal: every command and every reply, in order, nothing torn
    records = journal(summary["journal"])
    assert [r["phase"] for r in kinds(records, "phase")] == ["info", "initialised", "running", "stopped"]
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for name in names:
        for event in SESSION_EVENTS:
            sent = kinds(records, "send", rig=name, event=event)
            replied = kinds(records, "reply", rig=name, event=event)
            assert len(sent) == 1 and len(replied) == 1, (name, event)
            assert sent[0]["seq"] < replied[0]["seq"]
        assert kinds(records, "reply", rig=name, event="EXPEND")[0]["status"] == ExpStatus.STOPPED
    # the main-sync rig starts before any other rig is asked, and stops after every other has stopped
    sync_started = kinds(records, "reply", rig="sync", event="EXPSTART")[0]["seq"]
    sync_stop_sent = kinds(records, "send", rig="sync", event="EXPEND")[0]["seq"]
    for name in names[1:]:
        assert kinds(records, "send", rig=name, event="EXPSTART")[0]["seq"] > sync_started
        assert kinds(records, "reply", rig=name, event="EXPEND")[0]["seq"] < sync_stop_sent

    # the experiment description, completed at stop
    desc = read_description(summary["description"])
    assert (desc["exp_ref"], desc["subject"], desc["main_sync"], desc["outcome"]) == (ref, "FULL", "sync", "completed")
    assert desc["start_time"] and desc["end_time"] and desc["start_time"] < desc["end_time"]
    assert {n: (r["role"], r["status"], r["participating"]) for n, r in desc["rigs"].items()} == {
        "sync": ("main_sync", "STOPPED", True), **{n: ("aux", "STOPPED", True) for n in names[1:]}}
    assert set(desc["rigs"]["cams"]["experiment_description"]["devices"]["cameras"]) == {"left", "right"}
    assert desc["sync"]["rigdeck"]["rig"] == "sync"

    # every recorder's file, filed by each rig under the same exp_ref, spans inside the main-sync clock's span
    clock = check_recordings(lab, "sync", ref)["nidq"]
    for name in names[1:]:
        for header in check_recordings(lab, name, ref).values():
            assert clock["t0"] <= header["t0"] and header["stopped_at"] <= clock["stopped_at"], (name, header)


def test_rollback_policy_interrupts_the_rigs_that_started(lab: RigCluster, tmp_path: Path) -> None:
    async def main() -> None:
        async with console(lab.specs_for(["sync", "cams", "bad"]), tmp_path, subject="RB") as session:
            assert (await session.info()).ok and (await session.init()).ok
            result = await session.start()
            assert not result.ok and result.failed == ["bad"] and session.phase is Phase.FAILED
            assert "bad" in result.error and "InjectedFailure" in result.outcomes["bad"].error
            assert {n: o.status for n, o in result.rollback.items()} == {n: 30 for n in ("sync", "cams", "bad")}
            specs = lab.specs_for(["sync", "cams", "bad"])
            return session.exp_ref, session.journal_path, session.description_path, \
                {n: await rig_status(spec) for n, spec in specs.items()}

    ref, journal_path, description, statuses = run(main())
    assert statuses == {"sync": 30, "cams": 30, "bad": 30}  # asked afresh: nothing is left recording
    records = journal(journal_path)
    assert kinds(records, "rollback")[0]["failed"] == ["bad"]
    assert kinds(records, "error", rig="bad", event="EXPSTART")
    assert kinds(records, "phase")[-1]["phase"] == "failed"
    assert read_description(description)["outcome"] == "failed"
    check_recordings(lab, "sync", ref, allow_empty=True)  # started, then closed cleanly by the interrupt
    check_recordings(lab, "cams", ref, allow_empty=True)
    assert lab.recordings("bad", ref) == {}


def test_continue_policy_goes_on_without_the_failed_rig(lab: RigCluster, tmp_path: Path) -> None:
    async def main() -> tuple:
        async with console(lab.specs_for(["sync", "cams", "bad"]), tmp_path, subject="CONT",
                           policy="continue") as session:
            assert (await session.info()).ok and (await session.init()).ok
            started = await session.start()
            assert started.ok and started.dropped == ["bad"] and session.degraded
            assert session.phase is Phase.RUNNING and session.participants == ["sync", "cams"]
            await wait_until(lambda: recording_started(lab, ["sync", "cams"], session.exp_ref), 10, "recordings")
            stopped = await session.stop()
            assert stopped.ok and set(stopped.outcomes) == {"sync", "cams"}
            return session.exp_ref, session.journal_path, session.description_path

    ref, journal_path, description = run(main())
    records = journal(journal_path)
    assert kinds(records, "degraded")[0]["dropped"] == ["bad"]
    assert not kinds(records, "send", rig="bad", event="EXPEND")  # a dropped rig is left alone
    desc = read_description(description)
    assert desc["degraded"] and desc["outcome"] == "completed_with_errors"
    assert not desc["rigs"]["bad"]["participating"] and desc["rigs"]["cams"]["status"] == "STOPPED"
    check_recordings(lab, "sync", ref)
    check_recordings(lab, "cams", ref)
    assert lab.recordings("bad", ref) == {}


def test_main_sync_conflict_names_the_claimants_and_main_sync_chooses(lab: RigCluster, tmp_path: Path) -> None:
    # neither the rigs file nor the user chooses: both rig files say main_sync: true
    rigs = lab.rigs_file_for(["sync", "sync2", "cams"], tmp_path / "remote_rigs.yaml", roles=False)
    data = str(tmp_path / "console")
    code, summary, _ = run_cli("--rigs", str(rigs), "--subject", "MS", "--data-dir", data)
    assert code == 1 and summary["exp_ref"] is None and summary["phase"] == "idle"
    assert "several rigs claim main sync: sync, sync2" in summary["error"]
    assert "--main-sync" in summary["error"]

    code, summary, stderr = run_cli("--rigs", str(rigs), "--subject", "MS", "--main-sync", "sync2",
                                    "--duration", "0.3", "--data-dir", data)
    assert code == 0, (summary, stderr[-2000:])
    ref = today_ref(1, "MS")
    assert summary["main_sync"] == "sync2" and summary["exp_ref"] == ref
    desc = read_description(summary["description"])
    assert desc["main_sync"] == "sync2" and desc["rigs"]["sync"]["role"] == "aux"
    # the chosen rig handed out the exp_ref from its own data folder; the other stepped down
    assert lab.session_dir("sync2", ref).is_dir()
    info = {r["rig"]: r["data"][1] for r in kinds(journal(summary["journal"]), "reply", event="EXPINFO")}
    assert info["sync2"]["main_sync"] is True and info["sync"]["main_sync"] is False
    assert info["sync2"]["exp_ref"] == ref and info["sync"]["exp_ref"] is None
    check_recordings(lab, "sync2", ref)


def test_exp_ref_numbering_across_two_sessions_of_one_day(lab: RigCluster, tmp_path: Path) -> None:
    async def one_session() -> tuple[str, Path]:
        async with console(lab.specs_for(["sync", "cams"]), tmp_path, subject="NUM") as session:
            for step in (session.info, session.init, session.start, session.stop):
                assert (await step()).ok, step.__name__
            return session.exp_ref, session.folder

    first, second = run(one_session()), run(one_session())
    assert (first[0], second[0]) == (today_ref(1, "NUM"), today_ref(2, "NUM"))
    assert (first[1].name, second[1].name) == ("001", "002") and first[1].parent == second[1].parent
    for ref, _ in (first, second):  # every rig filed each session under its own number
        assert lab.session_dir("sync", ref).is_dir() and lab.session_dir("cams", ref).is_dir()
        assert {read_recording(p)[1]["header"]["exp_ref"] for p in lab.recordings("cams", ref)} == {ref}


def test_a_new_main_sync_rig_continues_the_consoles_numbering(lab: RigCluster, tmp_path: Path) -> None:
    """Session 1 clocked by sync2, session 2 by sync (whose own folder has no session of that subject):
    sync first offers _1_, which this console has already used, so the console proposes _2_ and sync takes it."""

    async def one_session(names: list[str], main_sync: str) -> tuple[str, list[str]]:
        async with console(lab.specs_for(names), tmp_path, subject="SW", main_sync=main_sync) as session:
            info = await session.info()
            assert info.ok, info.error
            for step in (session.init, session.start, session.stop):
                assert (await step()).ok, step.__name__
            return session.exp_ref, info.warnings

    first, _ = run(one_session(["sync2", "cams"], "sync2"))
    second, warnings = run(one_session(["sync", "cams"], "sync"))
    assert (first, second) == (today_ref(1, "SW"), today_ref(2, "SW"))
    assert warnings == [f"sync offered exp_ref {first}, already used here; proposed {second}"]
    assert lab.session_dir("sync", second).is_dir() and lab.session_dir("cams", second).is_dir()
