"""The console's trust rules without Qt: a session rig lost is an alarm (worded, acknowledged, shown back),
the log says lost once and back once, and Start with a rig known down asks at once (without / wait / cancel)."""

import asyncio

import pytest
from helpers import wait_until
from test_console import setup

from core.journal import JOURNAL_NAME, read_description, read_journal
from core.session import Phase, SessionError


def lines(console, rig, level=None):
    return [e.text for e in console.logbook.entries if e.rig == rig and (level is None or e.level == level)]


def test_a_session_rig_lost_is_an_alarm_until_acknowledged_and_shows_when_it_came_back(tmp_path):
    rigs, path, console = setup(tmp_path)
    raised = []
    console.alarms.on_change(lambda alarm, new: raised.append(alarm.rig) if new else None)

    async def main():
        await console.load(path)
        assert (await console.start("KS001")).ok
        rigs["sync"].dead = True  # the main-sync rig goes away mid-session
        await wait_until(lambda: console.alarms.shown())
        (alarm,) = console.alarms.shown()
        assert alarm.open and alarm.text.startswith("main sync sync lost: this session's sync pulses may be missing")
        assert console.warning().startswith("⚠ sync lost")
        await asyncio.sleep(0.5)  # ten polls of a dead rig: no more log lines, no second alarm
        assert len(lines(console, "sync", "warning")) == 1 and raised == ["sync"]
        rigs["sync"].dead = False
        await wait_until(lambda: not alarm.open)
        assert "back at" in alarm.text and console.alarms.shown() == [alarm]  # stays until acknowledged
        console.alarms.acknowledge(alarm.id)
        assert console.alarms.shown() == [] and console.warning() is None
        await console.stop()
        folder = console.session.folder
        await console.close()
        return folder, alarm

    folder, alarm = asyncio.run(main())
    said = [t.split(" at ")[0] for t in lines(console, "sync") if t.startswith(("Lost", "Back"))]
    assert said == ["Lost", "Back"]  # once each
    journaled = [(r["incident"], r["to"] is None) for r in read_journal(folder / JOURNAL_NAME).records
                 if r.get("kind") == "incident"]
    assert journaled == [("link_lost", True), ("link_lost", False)]
    described = read_description(folder)["incidents"]
    assert [(i["rig"], i["kind"]) for i in described] == [("sync", "link_lost")]
    assert described[0]["from"] == alarm.since and described[0]["to"] == alarm.until


def test_a_rig_lost_outside_a_session_is_logged_not_an_alarm(tmp_path):
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        rigs["cam"].dead = True
        await wait_until(lambda: console.state.get(["rigs", "cam", "link"]) == "unreachable")
        assert console.alarms.shown() == [] and console.warning() is None
        assert [t for t in lines(console, "cam", "warning")][0].startswith("Lost at")
        await console.close()

    asyncio.run(main())


def test_start_with_a_rig_known_down_offers_at_once_and_can_go_on_without_it(tmp_path):
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        rigs["mic"].dead = True
        await wait_until(lambda: console.known_down() == ["mic"])
        offer = console.start_offer(console.known_down())
        assert offer.can_continue and "mic cannot be reached" in offer.text
        result = await console.start("KS001", without=offer.down)
        assert result.ok and console.phase is Phase.RUNNING
        session = console.session
        assert session.participants == ["sync", "cam"] and session.degraded
        assert not any(event == "EXPINFO" for event, _ in rigs["mic"].received)
        await console.stop()
        await console.close()
        return session.folder

    folder = asyncio.run(main())
    assert read_description(folder)["rigs"]["mic"]["participating"] is False


def test_start_without_the_main_sync_is_not_offered(tmp_path):
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        console.set_main_sync("sync")
        rigs["sync"].dead = True
        await wait_until(lambda: console.known_down() == ["sync"])
        offer = console.start_offer(["sync"])
        assert not offer.can_continue and "main-sync rig sync" in offer.text
        with pytest.raises(SessionError):
            await console.start("KS001", without=["sync"])
        await console.close()

    asyncio.run(main())


def test_waiting_for_a_rig_known_down_returns_when_it_is_back_and_can_be_cancelled(tmp_path):
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        listeners = console.monitor.listener_count()
        rigs["mic"].dead = True
        await wait_until(lambda: console.known_down() == ["mic"])
        given_up = asyncio.ensure_future(console.wait_for_rigs(["mic"]))
        await asyncio.sleep(0.2)  # several polls: the rig is still down, nothing may have returned
        assert not given_up.done()
        given_up.cancel()
        waiting = asyncio.ensure_future(console.wait_for_rigs(["mic"]))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        rigs["mic"].dead = False
        await asyncio.wait_for(waiting, 5)
        assert given_up.cancelled() and console.monitor.listener_count() == listeners
        assert (await console.start("KS001")).ok and console.session.participants == ["sync", "cam", "mic"]
        await console.abort()
        await console.close()

    asyncio.run(main())


def test_a_session_rig_reporting_an_error_is_an_alarm_too_and_its_error_clears_when_it_answers_well(tmp_path):
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        assert (await console.start("KS001")).ok
        rigs["cam"].faults["EXPSTATUS"] = "error"  # the rig answers its status polls with an error report
        await wait_until(lambda: console.alarms.shown())
        (alarm,) = console.alarms.shown()
        assert alarm.kind == "rig_error" and alarm.text.startswith("cam reported an error at ")
        assert "refused by cam" in console.state.get(["rigs", "cam", "last_error"])
        del rigs["cam"].faults["EXPSTATUS"]
        await wait_until(lambda: not alarm.open)
        assert console.state.get(["rigs", "cam", "last_error"]) is None  # gone from the live column
        assert "refused by cam" in console.state.get(["rigs", "cam", "errors"])[-1][1]  # kept in the history
        await console.abort()
        await console.close()

    asyncio.run(main())


def test_an_earlier_sessions_alarm_stays_on_the_board_but_does_not_redden_the_next_session(tmp_path):
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        assert (await console.start("KS001")).ok
        rigs["cam"].dead = True
        await wait_until(lambda: console.alarms.shown())
        rigs["cam"].dead = False
        await wait_until(lambda: not console.alarms.shown()[0].open)
        assert console.warning().startswith("⚠ cam lost")  # this session's: red until acknowledged
        await console.stop()
        await console.cleanup()
        assert (await console.start("KS002")).ok
        assert console.warning() is None and len(console.alarms.shown()) == 1
        await console.abort()
        await console.close()

    asyncio.run(main())
