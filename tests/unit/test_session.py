"""Session engine rules over in-memory rigs: main sync, exp_ref, policies, timeouts, live state, alyx, reattach."""

import asyncio
import datetime as dt

import pytest
from fake_rigs import FakeLink, FakeRig, make_rigs
from helpers import run, wait_until

from core import monitor as monitor_mod
from core.config import parse_rig
from core.journal import REDACTED, load_session, read_description, read_journal
from core.link import LinkState
from core.protocol import ExpMessage, ExpStatus
from core.session import Phase, Session, SessionError
from transports.registry import TRANSPORTS

DAY = dt.date(2026, 11, 22)
REF = "2026-11-22_5_KS001"


def new_session(links, tmp_path, **kw):
    kw.setdefault("subject", "KS001")
    kw.setdefault("timeout", 0.2)
    kw.setdefault("poll_interval", None)
    return Session(links, data_dir=tmp_path, today=lambda: DAY, **kw)


def kinds(path):
    return [(r["kind"], r.get("rig"), r.get("event")) for r in read_journal(path).records]


def test_full_session_four_rigs(tmp_path):
    rigs, links = make_rigs("sync", "cam", "ephys", "mic", main="sync", exp_ref=REF)
    progress = []

    async def main():
        s = new_session(links, tmp_path)
        s.on_progress(progress.append)
        assert s.can("info") and not s.can("start")
        r = await s.info()
        assert r.ok, r.error
        assert (s.main_sync, s.exp_ref, s.phase) == ("sync", REF, Phase.INFO)
        assert s.folder == tmp_path / "KS001" / "2026-11-22" / "005"
        assert (await s.init()).ok and s.phase is Phase.INITIALISED
        r = await s.start()
        assert r.ok and s.phase is Phase.RUNNING
        assert {n: o.status for n, o in r.outcomes.items()} == dict.fromkeys(rigs, 20)
        assert (await s.status()).ok
        assert s.state.get(["rigs", "cam", "status"]) == 20 and s.state.get(["rigs", "cam", "link"]) == "online"
        assert s.state.get(["session", "rigs", "sync", "main_sync"]) is True
        assert s.state.get(["session", "phase"]) == "running"
        r = await s.stop()
        assert r.ok and s.phase is Phase.STOPPED and s.outcome == "completed"
        assert (await s.cleanup()).ok
        await s.close()
        return s

    s = asyncio.run(main())
    assert all(r.status == 0 for r in rigs.values())
    # the main sync starts alone, first, and stops alone, last
    log = rigs["sync"].log
    starts = [n for n, e in log if e == "EXPSTART"]
    ends = [n for n, e in log if e == "EXPEND"]
    assert starts[0] == "sync" and ends[-1] == "sync"
    # every command, reply and phase change is in the journal, in order, with contiguous seq numbers
    read = read_journal(s.journal_path)
    assert not read.problems
    assert [r["seq"] for r in read.records] == list(range(1, len(read.records) + 1))
    k = kinds(s.journal_path)
    assert k[0][0] == "session" and ("phase", None, None) in k
    for event in ("EXPINFO", "EXPINIT", "EXPSTART", "EXPEND", "EXPCLEANUP"):
        for rig in rigs:
            assert ("send", rig, event) in k and ("reply", rig, event) in k
    phases = [r["phase"] for r in read.records if r["kind"] == "phase"]
    assert phases == ["info", "initialised", "running", "stopped"]
    summary = load_session(s.folder)
    assert summary.finished and summary.exp_ref == REF and summary.statuses["cam"] == 0
    assert summary.rigs["sync"]["uri"].startswith("udp://")
    desc = read_description(s.folder)
    assert desc["exp_ref"] == REF and desc["main_sync"] == "sync" and desc["outcome"] == "completed"
    assert desc["rigs"]["sync"]["role"] == "main_sync" and desc["rigs"]["cam"]["role"] == "aux"
    assert desc["start_time"] and desc["end_time"]
    # progress reached the listeners, per rig and per phase
    assert any(p.kind == "reply" and p.rig == "mic" and p.step == "start" for p in progress)
    assert any(p.kind == "phase" and p.detail == "running" for p in progress)


def test_user_choice_of_main_sync_is_told_true_others_false(tmp_path):
    rigs, links = make_rigs("a", "b", "c", "d", main="a", exp_ref="2026-11-22_3_KS001")
    rigs["d"].main_sync = True
    rigs["d"].honours_choice = False  # an iblrig-like rig keeps claiming

    async def main():
        s = new_session(links, tmp_path, main_sync="b")
        r = await s.info()
        assert r.ok, r.error
        assert s.main_sync == "b"
        assert r.warnings == ["d also claim main sync; 'b' was chosen"]
        # b offered no exp_ref: the next free number of the data folder
        assert s.exp_ref == "2026-11-22_1_KS001"
        await s.close()

    asyncio.run(main())
    assert [rigs[n].told_main_sync for n in "abcd"] == [False, True, False, False]
    assert [rigs[n].received[0][1][1].get("main_sync_rig") for n in "abcd"] == ["b", None, "b", "b"]
    assert not rigs["a"].main_sync


def test_rigs_file_role_counts_as_the_choice(tmp_path):
    rigs, links = make_rigs("a", "b")
    specs = {"a": parse_rig("a", "udp://127.0.0.1:1", TRANSPORTS), "b": parse_rig("b", {"uri": "udp://127.0.0.1:2",
                                                                          "role": "main_sync"}, TRANSPORTS)}

    async def main():
        s = new_session(links, tmp_path, specs=specs)
        assert (await s.info()).ok
        assert s.main_sync == "b"
        await s.close()

    asyncio.run(main())


def test_no_claimant_or_several_claimants_is_an_error_naming_them(tmp_path):
    async def main():
        _, links = make_rigs("a", "b", "c")
        s = new_session(links, tmp_path)
        r = await s.info()
        assert not r.ok and "no rig claims main sync" in r.error and "a, b, c" in r.error
        assert s.phase is Phase.IDLE and s.journal_path is None
        rigs, links = make_rigs("a", "b", "c")
        rigs["a"].main_sync = rigs["c"].main_sync = True
        s2 = new_session(links, tmp_path)
        r = await s2.info()
        assert not r.ok and "several rigs claim main sync: a, c" in r.error
        with pytest.raises(SessionError, match="not one of the rigs"):
            new_session(links, tmp_path, main_sync="zzz")

    asyncio.run(main())


def test_exp_ref_numbering_across_sessions_of_one_day(tmp_path):
    async def one():
        _, links = make_rigs("a", "b", main="a")
        s = new_session(links, tmp_path)
        assert (await s.info()).ok
        await s.close()
        return s.exp_ref

    refs = [asyncio.run(one()) for _ in range(3)]
    assert refs == ["2026-11-22_1_KS001", "2026-11-22_2_KS001", "2026-11-22_3_KS001"]


def test_exp_ref_from_main_sync_must_match_the_subject(tmp_path):
    _, links = make_rigs("a", "b", main="a", exp_ref="2026-11-22_1_OTHER")

    async def main():
        s = new_session(links, tmp_path)
        r = await s.info()
        assert not r.ok and "OTHER" in r.error and "KS001" in r.error

    asyncio.run(main())


def test_rollback_interrupts_the_rigs_that_started(tmp_path):
    rigs, links = make_rigs("sync", "cam", "ephys", "mic", main="sync")
    rigs["ephys"].faults["EXPSTART"] = "error"

    async def main():
        s = new_session(links, tmp_path)
        for step in (s.info, s.init):
            assert (await step()).ok
        r = await s.start()
        assert not r.ok and s.phase is Phase.FAILED and "ephys" in r.error
        assert r.outcomes["ephys"].result == "error" and "refused" in r.outcomes["ephys"].error
        assert set(r.rollback) == {"sync", "cam", "ephys", "mic"}
        assert not s.can("stop") and s.can("cleanup")
        await s.close()
        return s

    s = asyncio.run(main())
    assert all(rig.status == 30 for name, rig in rigs.items() if name != "ephys")
    assert ("EXPINTERRUPT" in [e for e, _ in rigs["cam"].received])
    assert read_description(s.folder)["outcome"] == "failed"
    assert load_session(s.folder).phase == "failed"


def test_continue_policy_goes_on_without_the_failed_rig(tmp_path):
    rigs, links = make_rigs("sync", "cam", "ephys", "mic", main="sync")
    rigs["cam"].faults["EXPINIT"] = "timeout"

    async def main():
        s = new_session(links, tmp_path, policy="continue", timeout=0.05)
        assert (await s.info()).ok
        r = await s.init()
        assert r.ok and r.dropped == ["cam"] and s.degraded
        assert r.outcomes["cam"].result == "timeout"
        assert s.state.get(["rigs", "cam", "link"]) == "unreachable"
        assert (await s.start()).ok and s.participants == ["sync", "ephys", "mic"]
        r = await s.stop()
        assert r.ok and set(r.outcomes) == {"sync", "ephys", "mic"}
        assert s.outcome == "completed_with_errors"
        await s.close()
        return s

    s = asyncio.run(main())
    assert rigs["cam"].status == 0 and rigs["mic"].status == 30
    summary = load_session(s.folder)
    assert summary.degraded and summary.participants == ["sync", "ephys", "mic"]
    assert read_description(s.folder)["rigs"]["cam"]["participating"] is False


@pytest.mark.parametrize("end", ["stop", "interrupt"])
def test_a_rig_dropped_for_not_answering_is_stood_down_at_the_end(tmp_path, end):
    """``continue`` drops a rig that did not answer EXPSTART; it may have started all the same. It must not
    run on after the session: the stop (or abort) interrupts it too, without counting it as a participant."""
    rigs, links = make_rigs("sync", "cam", "mic", main="sync")
    rigs["cam"].faults["EXPSTART"] = "late"  # cam starts, but its reply is lost

    async def main():
        s = new_session(links, tmp_path, policy="continue", timeout=0.05)
        for step in (s.info, s.init):
            assert (await step()).ok
        r = await s.start()
        assert r.ok and r.dropped == ["cam"] and s.maybe_going == {"cam"}
        assert rigs["cam"].status == 20  # going on its own
        r = await (s.stop() if end == "stop" else s.interrupt())
        assert r.ok and set(r.outcomes) == {"sync", "mic"} and r.stood_down["cam"].ok
        assert not s.maybe_going
        await s.close()
        return s

    s = asyncio.run(main())
    assert rigs["cam"].status == 30 and rigs["cam"].received[-1][0] == "EXPINTERRUPT"
    assert rigs["cam"].received[-1][1][0]["error"] == "DroppedFromSession"
    assert ("send", "cam", "EXPINTERRUPT") in kinds(s.journal_path)  # journaled like every message
    assert load_session(s.folder).maybe_going == []


def test_a_rollback_after_a_drop_stands_the_dropped_rig_down_too(tmp_path):
    """cam is dropped at init (its reply lost, but it did init); then the main sync fails to start: the
    rollback interrupts cam as well, so nothing is left initialised for a session that failed."""
    rigs, links = make_rigs("sync", "cam", "mic", main="sync")
    rigs["cam"].faults["EXPINIT"] = "late"
    rigs["sync"].faults["EXPSTART"] = "error"

    async def main():
        s = new_session(links, tmp_path, policy="continue", timeout=0.05)
        assert (await s.info()).ok
        assert (await s.init()).dropped == ["cam"] and rigs["cam"].status == 10
        r = await s.start()
        assert not r.ok and s.phase is Phase.FAILED and r.stood_down["cam"].ok
        await s.close()

    asyncio.run(main())
    assert rigs["cam"].status == 30 and rigs["cam"].received[-1][0] == "EXPINTERRUPT"


def test_a_dropped_rig_that_reports_it_is_idle_is_left_alone(tmp_path):
    """A dropped rig whose status, polled since, says it is not going gets no stand-down at the stop."""
    rigs, links = make_rigs("sync", "cam", main="sync")
    rigs["cam"].faults["EXPSTART"] = "timeout"  # never got it

    async def main():
        s = new_session(links, tmp_path, policy="continue", timeout=0.05)
        for step in (s.info, s.init):
            assert (await step()).ok
        assert (await s.start()).dropped == ["cam"] and s.maybe_going == {"cam"}
        del rigs["cam"].faults["EXPSTART"]
        rigs["cam"].status = 0  # what the rig says when polled: CONNECTED
        await s.status(["cam"])
        assert not s.maybe_going
        r = await s.stop()
        assert r.ok and r.stood_down == {}
        await s.close()
        return s

    s = asyncio.run(main())
    assert "EXPINTERRUPT" not in [e for e, _ in rigs["cam"].received]
    assert load_session(s.folder).maybe_going == []


def test_a_reattached_console_still_stands_down_a_dropped_rig(tmp_path):
    """The console that dropped the rig died: the one that takes over (from the journal) stops it too."""
    rigs, links = make_rigs("sync", "cam", main="sync")
    rigs["cam"].faults["EXPSTART"] = "late"

    async def first():
        s = new_session(links, tmp_path, policy="continue", timeout=0.05)
        for step in (s.info, s.init, s.start):
            await step()
        assert s.maybe_going == {"cam"}
        return s.folder  # and the console dies: no stop, journal left as is

    folder = asyncio.run(first())
    summary = load_session(folder)
    assert summary.maybe_going == ["cam"] and summary.participants == ["sync"]

    async def second():
        s = Session.attach(links, summary, today=lambda: DAY, poll_interval=None, timeout=0.2)
        r = await s.stop()
        assert r.ok and set(r.outcomes) == {"sync"} and r.stood_down["cam"].ok
        await s.close()

    asyncio.run(second())
    assert rigs["cam"].status == 30 and rigs["sync"].status == 30


def test_continue_policy_still_rolls_back_without_the_main_sync(tmp_path):
    rigs, links = make_rigs("sync", "cam", main="sync")
    rigs["sync"].faults["EXPSTART"] = "error"

    async def main():
        s = new_session(links, tmp_path, policy="continue")
        await s.info()
        await s.init()
        r = await s.start()
        assert not r.ok and "main-sync" in r.error
        assert r.outcomes["cam"].result == "skipped"  # never started without the clock
        assert s.phase is Phase.FAILED

    asyncio.run(main())
    assert "EXPSTART" not in [e for e, _ in rigs["cam"].received]


@pytest.mark.parametrize("answer", ["continue", "rollback"])
def test_a_decider_chooses_the_policy_for_each_partial_failure(tmp_path, answer):
    """The GUI asks the experimenter; the engine applies the answer (and journals it)."""
    rigs, links = make_rigs("sync", "cam", "mic", main="sync")
    rigs["mic"].faults["EXPSTART"] = "error"
    asked = []

    async def decide(result):
        asked.append((result.step, result.failed))
        return answer

    async def main():
        s = new_session(links, tmp_path, decide=decide, details={"projects": ["ibl"], "notes": "", "procedures": []})
        for step in (s.info, s.init):
            assert (await step()).ok
        r = await s.start()
        await s.close()
        return s, r

    s, r = asyncio.run(main())
    assert asked == [("start", ["mic"])]
    if answer == "continue":
        assert r.ok and s.phase is Phase.RUNNING and s.participants == ["sync", "cam"] and s.degraded
    else:
        assert not r.ok and s.phase is Phase.FAILED and rigs["cam"].status == 30
    decision = [x for x in read_journal(s.journal_path).records if x["kind"] == "decision"]
    assert decision[0]["policy"] == answer
    description = read_description(s.folder)
    assert description["projects"] == ["ibl"] and "notes" not in description


def test_a_link_that_ignores_its_timeout_is_cut_by_the_engine(tmp_path, monkeypatch):
    monkeypatch.setattr(monitor_mod, "TIMEOUT_GUARD", 0.05)
    rigs, links = make_rigs("sync", "cam", main="sync")

    async def main():
        s = new_session(links, tmp_path, timeout=0.05)
        await s.info()
        rigs["cam"].faults["EXPINIT"] = "hang"
        r = await asyncio.wait_for(s.init(), 5)
        assert r.outcomes["cam"].result == "timeout" and r.outcomes["sync"].ok
        assert s.phase is Phase.FAILED  # rollback by default
        assert r.rollback["sync"].ok

    asyncio.run(main())


def test_fan_out_is_concurrent(tmp_path):
    """Every rig has its EXPINIT before any rig answers: the requests are in flight together, not one by one
    (counted, not timed: a serial fan-out would hold one request and wait for ever)."""
    rigs, links = make_rigs(*[f"r{i}" for i in range(8)], main="r0")

    async def main():
        s = new_session(links, tmp_path, timeout=30)
        await s.info()
        gate = asyncio.Event()
        for rig in rigs.values():
            rig.gate = gate
        init = asyncio.ensure_future(s.init())
        await wait_until(lambda: all(link.concurrent == 1 for link in links.values()) or init.done(),
                         what="all 8 EXPINITs in flight at once")
        assert not init.done() and all(link.concurrent == 1 for link in links.values())
        gate.set()
        result = await init
        assert result.ok and all(rig.status is ExpStatus.INITIALIZED for rig in rigs.values())
        await s.close()

    run(main())


def test_wrong_phase_is_refused(tmp_path):
    _, links = make_rigs("a", main="a")

    async def main():
        s = new_session(links, tmp_path)
        with pytest.raises(SessionError, match="cannot start now: phase is idle"):
            await s.start()
        await s.info()
        assert s.can("init") and not s.can("stop")
        assert sorted(s.state.get(["session", "actions"])) == ["alyx", "info", "init", "interrupt", "status"]

    asyncio.run(main())


def test_alyx_token_relayed_and_never_in_clear(tmp_path, caplog):
    rigs, links = make_rigs("sync", "cam", "mic", main="sync")
    secret = "s3cr3t-t0ken-value"
    rigs["cam"].token = ("https://alyx.example.org", {"ann": {"token": secret}})
    progress = []

    async def main():
        s = new_session(links, tmp_path)
        s.on_progress(progress.append)
        await s.info()
        result = await s.alyx()
        assert result.source == "cam" and result.base_url == "https://alyx.example.org"
        assert result.users == ["ann"] and set(result.relayed) == {"sync", "mic"}
        assert all(o.ok for o in result.relayed.values())
        assert rigs["mic"].token == ("https://alyx.example.org", {"ann": {"token": secret}})
        # explicit token given by the user: everyone gets it
        r2 = await s.alyx("https://alyx.example.org", {"bob": "plain-" + secret})
        assert set(r2.relayed) == {"sync", "cam", "mic"}
        await s.close()
        return s

    s = asyncio.run(main())
    assert rigs["mic"].token == ("https://alyx.example.org", {"bob": "plain-" + secret})
    text = s.journal_path.read_text()
    assert secret not in text and REDACTED in text and "ann" in text
    assert secret not in caplog.text
    assert not any(secret in repr(p.detail) for p in progress)
    assert secret not in str(s.state.snapshot())


def test_link_state_changes_reach_state_and_journal(tmp_path):
    rigs, links = make_rigs("a", "b", main="a")

    async def main():
        s = new_session(links, tmp_path)
        await s.info()
        links["b"].set_state(LinkState.UNREACHABLE, "host down")
        assert s.state.get(["rigs", "b", "link"]) == "unreachable"
        assert s.state.get(["rigs", "b", "last_error"]) == "host down"
        await s.close()
        return s

    s = asyncio.run(main())
    assert ("link", "b", None) in kinds(s.journal_path)


def test_reattach_after_the_console_dies(tmp_path):
    rigs, links = make_rigs("sync", "cam", "mic", main="sync")

    async def first_console():
        s = new_session(links, tmp_path)
        for step in (s.info, s.init, s.start):
            assert (await step()).ok
        # the console dies here: no stop, no close of the journal
        return s.folder

    folder = asyncio.run(first_console())
    summary = load_session(folder)
    assert not summary.finished and summary.phase == "running"
    assert summary.participants == ["sync", "cam", "mic"] and summary.main_sync == "sync"
    assert summary.statuses == {"sync": 20, "cam": 20, "mic": 20}

    async def second_console():
        new_links = {n: FakeLink(rigs[n]) for n in summary.participants}
        s = Session.attach(new_links, summary, timeout=0.2, poll_interval=None)
        assert s.phase is Phase.RUNNING and s.exp_ref == summary.exp_ref and s.can("stop")
        assert (await s.status()).ok
        r = await s.stop()
        assert r.ok and s.phase is Phase.STOPPED
        await s.close()

    asyncio.run(second_console())
    assert all(r.status == 30 for r in rigs.values())
    after = load_session(folder)
    assert after.finished and [r["kind"] for r in read_journal(folder / "_rigdeck_journal.jsonl").records].count(
        "attach") == 1
    assert read_description(folder)["outcome"] == "completed"


def test_interrupt_and_abort(tmp_path):
    rigs, links = make_rigs("sync", "cam", main="sync")

    async def main():
        s = new_session(links, tmp_path)
        await s.info()
        await s.init()
        r = await s.abort("Ctrl-C")
        assert r.ok and s.phase is Phase.ABORTED
        assert await s.abort("again") is None
        await s.close()
        return s

    s = asyncio.run(main())
    assert all(r.status == 30 for r in rigs.values())
    interrupts = [d for e, d in rigs["cam"].received if e == "EXPINTERRUPT"]
    assert interrupts[0][0]["message"] == "Ctrl-C" and interrupts[0][0]["error"] == "Aborted"
    assert read_description(s.folder)["outcome"] == "aborted"


def test_manipulator_rigs_take_no_session_messages(tmp_path):
    rigs, links = make_rigs("sync", "probes", main="sync")
    specs = {"sync": parse_rig("sync", "udp://127.0.0.1:1", TRANSPORTS),
             "probes": parse_rig("probes", {"uri": "sio://127.0.0.1:3000", "role": "manipulator"}, TRANSPORTS)}

    async def main():
        s = new_session(links, tmp_path, specs=specs)
        assert s.rigs == ["sync"]
        await s.info()
        await s.close()

    asyncio.run(main())
    assert rigs["probes"].received == []


def test_fake_rig_refuses_out_of_order():
    rig = FakeRig("x")
    with pytest.raises(RuntimeError):
        rig.handle(ExpMessage.EXPSTART, ["ref", None])
