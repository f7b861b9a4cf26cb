"""The window's brain without Qt: what Start/Stop/Abort do, when they are allowed, main-sync choice, rig edits."""

import asyncio

import pytest
from fake_rigs import FakeLink, FakeRig
from helpers import wait_until

from app.console import Console
from core.config import ConfigError
from core.journal import load_session, read_description
from core.session import Phase, SessionError


def setup(tmp_path, main="sync"):
    log: list = []
    rigs = {n: FakeRig(n, main_sync=(n == main), log=log) for n in ("sync", "cam", "mic")}
    path = tmp_path / "rigs.yaml"
    path.write_text("sync: udp://127.0.0.1:9001\ncam: udp://127.0.0.1:9002\nmic: udp://127.0.0.1:9003\n")
    console = Console(tmp_path / "data", timeout=0.2, poll_interval=0.05,
                      link_factory=lambda spec: FakeLink(rigs[spec.name], spec.uri))
    return rigs, path, console


def test_start_stop_cleanup_and_what_is_allowed_when(tmp_path):
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        assert console.can("start") and not console.can("stop") and not console.can("abort")
        r = await console.start("KS001", {"projects": ["ibl"]})
        assert r.ok and console.phase is Phase.RUNNING
        assert console.can("stop") and console.can("abort") and not console.can("start")
        with pytest.raises(SessionError):
            console.set_main_sync("cam")  # locked during a session
        with pytest.raises(SessionError):
            await console.remove_rig("cam")
        assert (await console.stop()).ok
        assert console.can("start") and console.can("cleanup")
        assert (await console.cleanup()).ok
        folder = console.session.folder
        await console.close()
        return folder

    folder = asyncio.run(main())
    assert all(r.status == 0 for r in rigs.values())
    assert read_description(folder)["projects"] == ["ibl"]
    assert load_session(folder).phase == "stopped"
    levels = {e.level for e in console.logbook.entries}
    assert "info" in levels


def test_main_sync_choice_goes_to_the_rigs(tmp_path):
    rigs, path, console = setup(tmp_path, main=None)

    async def main():
        await console.load(path)
        assert console.shown_main_sync() is None
        console.set_main_sync("cam")
        assert console.state.get(["console", "main_sync"]) == "cam"
        r = await console.start("KS001")
        assert r.ok and console.session.main_sync == "cam"
        await console.abort()
        assert console.phase is Phase.ABORTED
        await console.close()

    asyncio.run(main())
    assert rigs["cam"].told_main_sync is True and rigs["sync"].told_main_sync is False


def test_the_decider_is_asked_on_a_partial_failure(tmp_path):
    rigs, path, console = setup(tmp_path)
    rigs["mic"].faults["EXPINIT"] = "error"
    asked = []

    async def decide(result):
        asked.append(result.failed)
        return "continue"

    async def main():
        await console.load(path)
        console.decide = decide
        r = await console.start("KS001")
        assert r.ok and console.session.degraded and console.phase is Phase.RUNNING
        await console.stop()
        await console.close()

    asyncio.run(main())
    assert asked == [["mic"]]


def test_rig_edits_are_checked_and_saved(tmp_path):
    rigs, path, console = setup(tmp_path)
    rigs["extra"] = FakeRig("extra")

    async def main():
        await console.load(path)
        with pytest.raises(ConfigError, match="port"):
            await console.put_rig("extra", "udp://127.0.0.1:0")
        with pytest.raises(ConfigError, match="duplicate"):
            await console.put_rig("cam", "udp://127.0.0.1:9009")
        await console.put_rig("extra", {"uri": "udp://127.0.0.1:9004"})
        await console.remove_rig("mic")
        console.save()
        assert list(console.state.get(["rigs"])) == ["sync", "cam", "extra"]
        with pytest.raises(ConfigError):  # a bad file changes nothing
            bad = tmp_path / "bad.yaml"
            bad.write_text("a: [unclosed\n")
            await console.load(bad)
        assert list(console.specs) == ["sync", "cam", "extra"]
        await console.close()

    asyncio.run(main())
    text = path.read_text()
    assert "extra" in text and "mic" not in text


def test_rigs_are_watched_before_any_session_and_no_idle_session_exists(tmp_path):
    """The monitor keeps the rigs table live from load on; Start makes the first session."""
    rigs, path, console = setup(tmp_path)

    async def main():
        await console.load(path)
        assert console.session is None and console.phase is Phase.IDLE and console.can("start")
        assert not console.can("stop") and not console.can("cleanup")
        rigs["cam"].status = 30  # changed on the rig's own: the monitor's polling sees it without a session
        await wait_until(lambda: console.state.get(["rigs", "cam", "status"]) == 30)
        assert console.state.get(["rigs", "sync", "last_heard"]) is not None
        links = {n: link.listener_count() for n, link in console.links.items()}
        for _ in range(3):
            rigs["cam"].status = 0
            assert (await console.start("KS001")).ok
            await console.abort()
        assert {n: link.listener_count() for n, link in console.links.items()} == links
        await console.close()

    asyncio.run(main())
