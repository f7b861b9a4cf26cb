"""The rig monitor over real links: liveness, polling, last heard, incidents, and sessions that come and go."""

import asyncio
import gc
import weakref

from fake_rigs import make_rigs
from helpers import run, wait_until
from udp_helpers import EchoRig, udp_spec

from core.config import RigAddress
from core.journal import read_description, read_journal
from core.link import LinkState, RemoteError
from core.monitor import LINK_LOST, RIG_ERROR, RigMonitor
from core.protocol import ExpMessage
from core.session import Session
from core.state import LiveState
from transports.ibl.udp import UdpLink, serve_udp


def test_a_rig_that_goes_down_and_comes_back_gives_one_incident_with_from_and_to():
    async def main():
        rig = EchoRig("cam")
        server = await serve_udp(RigAddress("udp", "127.0.0.1", 0), rig)
        port = server.port
        link = UdpLink(udp_spec(port, name="cam", timeout=0.3))
        await link.connect()
        monitor = RigMonitor({"cam": link}, poll_interval=0.05)
        heard = []
        monitor.on_incident(heard.append)
        await monitor.start()
        await wait_until(lambda: monitor.status("cam") == 0 and monitor.link_state("cam") == "online")
        await server.close()  # the rig goes away
        await wait_until(lambda: monitor.link_state("cam") == "unreachable")
        assert [(i.rig, i.kind, i.open) for i in monitor.incidents] == [("cam", LINK_LOST, True)]
        server = await serve_udp(RigAddress("udp", "127.0.0.1", port), rig)  # and comes back on its port
        await wait_until(lambda: monitor.link_state("cam") == "online")
        await monitor.close()
        await link.close()
        await server.close()
        return monitor, heard

    monitor, heard = run(main())
    (incident,) = monitor.incidents
    assert incident.kind == LINK_LOST and incident.until is not None and incident.until >= incident.since
    assert [i.open for i in heard] == [True, False] and heard[0].id == heard[1].id == incident.id
    assert monitor.state.get(["rigs", "cam", "link"]) == "online"
    assert monitor.state.get(["rigs", "cam", "last_heard"]) is not None


def test_the_poller_stops_on_close():
    rigs, links = make_rigs("a", main="a")

    async def main():
        monitor = RigMonitor(links, poll_interval=0.01)
        await monitor.start()
        await wait_until(lambda: links["a"].requests >= 2)
        assert monitor.polling
        await monitor.close()
        assert not monitor.polling
        asked = links["a"].requests
        await asyncio.sleep(0.1)  # ten poll periods: nothing more may be asked
        return asked

    asked = run(main())
    assert links["a"].requests == asked
    assert links["a"].listener_count() == 0  # and it let go of the link


def test_polling_keeps_status_and_link_current():
    rigs, links = make_rigs("a", "b", main="a")

    async def main():
        state = LiveState()
        monitor = RigMonitor(links, state=state, poll_interval=0.02, timeout=0.2)
        changed = asyncio.Event()
        state.subscribe(lambda mod: changed.set() if mod.get("path") == ["rigs", "b"] and
                        mod.get("key") == "status" and mod.get("value") == 30 else None)
        gone = asyncio.Event()
        state.subscribe(lambda mod: gone.set() if mod.get("path") == ["rigs", "a"] and
                        mod.get("key") == "link" and mod.get("value") == "unreachable" else None)
        await monitor.start()
        rigs["b"].status = 30  # the rig changed on its own (e.g. its operator stopped it)
        await asyncio.wait_for(changed.wait(), 5)
        rigs["a"].dead = True
        await asyncio.wait_for(gone.wait(), 5)
        await monitor.close()

    run(main())
    assert links["b"].max_concurrent == 1  # never two requests at once to one rig


def test_pushing_links_are_mirrored_not_polled_and_their_pushes_count_as_heard():
    rigs, links = make_rigs("a", main="a")
    links["a"].pushes_status = True

    async def main():
        monitor = RigMonitor(links, poll_interval=0.02)
        await monitor.start()
        links["a"].emit_update({"action": "init", "struct": {"status": 10, "recorders": {}}})
        links["a"].emit_update({"action": "setitem", "path": [], "key": "status", "value": 20})
        assert monitor.state.get(["rigs", "a", "status"]) == 20 and monitor.status("a") == 20
        assert monitor.state.get(["rigs", "a", "service", "status"]) == 20
        assert monitor.state.get(["rigs", "a", "last_heard"]) is not None
        await asyncio.sleep(0.1)  # several poll periods pass: nothing may be polled
        await monitor.close()

    run(main())
    assert links["a"].requests == 0


def test_an_error_report_is_a_rig_error_incident_until_the_next_good_answer():
    rigs, links = make_rigs("a", main="a")

    async def main():
        monitor = RigMonitor(links, poll_interval=None)
        rigs["a"].faults["EXPSTATUS"] = "error"
        await monitor.start()
        try:
            await links["a"].request(ExpMessage.EXPSTATUS, 0)
        except RemoteError as ex:
            monitor.record_reply("a", rtt_ms=1.0, error=ex.text, reported=True)
        assert [(i.kind, i.open) for i in monitor.incidents] == [(RIG_ERROR, True)]
        monitor.record_reply("a", rtt_ms=1.0, status=0)
        await monitor.close()
        return monitor

    monitor = run(main())
    (incident,) = monitor.incidents
    assert incident.kind == RIG_ERROR and not incident.open and "refused" in incident.detail


def test_a_session_journals_the_incidents_of_its_rigs_and_lists_them_in_its_description(tmp_path):
    rigs, links = make_rigs("sync", "cam", main="sync", exp_ref="2026-11-22_1_KS001")

    async def main():
        monitor = RigMonitor(links, poll_interval=None, timeout=0.2)
        s = Session(links, subject="KS001", data_dir=tmp_path, monitor=monitor, timeout=0.2)
        assert (await s.info()).ok
        links["cam"].set_state(LinkState.UNREACHABLE, "cable pulled")
        links["cam"].set_state(LinkState.ONLINE)
        await s.close()
        links["cam"].set_state(LinkState.UNREACHABLE, "after the session")  # not this session's business
        await monitor.close()
        return s

    s = run(main())
    records = [r for r in read_journal(s.journal_path).records if r["kind"] == "incident"]
    assert [(r["rig"], r["incident"], r["to"] is None) for r in records] == [("cam", LINK_LOST, True),
                                                                           ("cam", LINK_LOST, False)]
    (listed,) = read_description(s.folder)["incidents"]
    assert listed["rig"] == "cam" and listed["kind"] == LINK_LOST and listed["to"] >= listed["from"]
    assert listed["detail"] == "cable pulled"


def test_fifty_sessions_over_the_same_links_leave_no_listener_and_no_session_behind(tmp_path):
    """Sessions come and go over links that live on: each one unsubscribes, none is kept alive."""
    rigs, links = make_rigs("sync", "cam", main="sync")

    async def main():
        monitor = RigMonitor(links, poll_interval=None, timeout=0.2)
        on_links = {n: link.listener_count() for n, link in links.items()}
        on_monitor = monitor.listener_count()
        alive = []
        for n in range(50):
            s = Session(links, subject="KS001", data_dir=tmp_path / str(n), monitor=monitor, timeout=0.2)
            s.on_progress(lambda p: None)
            assert (await s.status()).ok
            await s.close()
            alive.append(weakref.ref(s))
            del s
        gc.collect()
        assert {n: link.listener_count() for n, link in links.items()} == on_links
        assert monitor.listener_count() == on_monitor
        assert [ref for ref in alive if ref() is not None] == []
        await monitor.close()

    run(main())


def test_any_reply_counts_as_heard_whoever_asked():
    """A request the monitor did not make (a manipulator client, a script) still refreshes last heard."""
    rigs, links = make_rigs("a", main="a")

    async def main():
        monitor = RigMonitor(links, poll_interval=None)
        assert monitor.state.get(["rigs", "a", "last_heard"]) is None
        await links["a"].request(ExpMessage.EXPSTATUS, 0)
        heard = monitor.state.get(["rigs", "a", "last_heard"])
        assert heard is not None and monitor.state.get(["rigs", "a", "rtt_ms"]) is not None
        await monitor.close()

    run(main())


def test_a_lost_rig_shows_one_stable_error_which_clears_when_it_is_back_and_stays_in_its_history():
    async def main():
        rig = EchoRig("cam")
        server = await serve_udp(RigAddress("udp", "127.0.0.1", 0), rig)
        port = server.port
        link = UdpLink(udp_spec(port, name="cam", timeout=0.1))
        await link.connect()
        monitor = RigMonitor({"cam": link}, poll_interval=0.05)
        errors, links = [], []
        monitor.state.subscribe(lambda mod: errors.append(mod.get("value")) if mod.get("path") == ["rigs", "cam"]
                                and mod.get("key") == "last_error" else None)
        monitor.on_link(lambda name, value, error: links.append(value))
        await monitor.start()
        await wait_until(lambda: monitor.link_state("cam") == "online")
        await server.close()
        await wait_until(lambda: monitor.link_state("cam") == "unreachable")
        await asyncio.sleep(1.0)  # many polls time out and the link reports the port unreachable meanwhile
        lost_errors = list(errors)
        server = await serve_udp(RigAddress("udp", "127.0.0.1", port), rig)
        await wait_until(lambda: monitor.link_state("cam") == "online")
        history = monitor.state.get(["rigs", "cam", "errors"])
        last_error = monitor.state.get(["rigs", "cam", "last_error"])
        await monitor.close()
        await link.close()
        await server.close()
        return lost_errors, links, history, last_error

    lost_errors, links, history, last_error = run(main())
    assert len(lost_errors) == 1 and lost_errors[0]  # one text for the whole loss, no alternation
    assert links.count("unreachable") == 1 and links[-2:] == ["unreachable", "online"]
    assert last_error is None  # back: the live column is clear
    assert [text for _, text in history] == lost_errors  # and the history remembers


def test_a_pushing_rig_that_has_gone_quiet_is_probed(monkeypatch):
    """An idle manipulator rig pushes nothing: after QUIET_PROBE s of silence one EXPSTATUS checks it is there."""
    monkeypatch.setattr("core.monitor.QUIET_PROBE", 0.2)
    rigs, links = make_rigs("a", main="a")
    links["a"].pushes_status = True

    async def main():
        monitor = RigMonitor(links, poll_interval=0.02)
        await monitor.start()
        await wait_until(lambda: links["a"].requests >= 1)
        heard = monitor.state.get(["rigs", "a", "last_heard"])
        await monitor.close()
        return heard

    assert run(main()) is not None
