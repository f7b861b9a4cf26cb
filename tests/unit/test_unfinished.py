"""A rig that dies mid-session and starts again ends its previous run's recordings as truncated, tells the
console that comes to stop the session, and touches no other rig's files (in-process; the kill -9 version
with real processes is tests/integration/test_rig_restart.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest

from core.drivers.recorder import RecordingWriter, SimulatedRecorder, clock_text, close_truncated, read_recording
from core.protocol import ExpMessage as M
from core.service import RigRestarted, RigService
from core.unfinished import UnfinishedRecordings, restart_note

DAY = dt.date(2026, 11, 30)
REF = "2026-11-30_1_KS002"


def run(coro, timeout=20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rig(data_dir):
    cam = SimulatedRecorder("cam", "camera", rate=200.0, chunk_interval=0.01)
    return RigService("cams", data_dir=data_dir, recorders={"cam": cam}, today=lambda: DAY)


async def record_then_die(data_dir):
    """EXPINIT, EXPSTART, a few chunks, then the process "dies": files left as a crash leaves them."""
    svc = rig(data_dir)
    await svc.start()
    await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "127.0.0.1:4000")
    await svc.handle(M.EXPSTART, [REF, None], "127.0.0.1:4000")
    recorder = svc.recorders["cam"]
    while read_recording(recorder.path, with_data=False)[1]["chunks"] < 3:
        await asyncio.sleep(0.01)
    task = recorder._task
    task.cancel()  # no more writes, and no stop(): no footer (what kill -9 leaves, torn chunk aside)
    await asyncio.gather(task, return_exceptions=True)
    recorder.close_now()
    with open(recorder.path, "ab") as torn:
        torn.write(b"CHNK\x10\x00")  # a chunk cut short by the kill
    return recorder.path


def test_a_restarted_rig_closes_its_unfinished_recording_as_truncated_and_says_so_on_stop(tmp_path):
    async def main():
        path = await record_then_die(tmp_path)
        other = tmp_path / "KS002" / "2026-11-30" / "001" / "raw_video_data" / "other.camera.rdrec"
        writer = RecordingWriter(other, {"frame_size": 4, "t0": 1.0})  # another rig's live file, same folder
        writer.write_chunk(0, [2.0], [b"abcd"])
        again = rig(tmp_path)
        await again.start()
        with pytest.raises(RigRestarted) as stop:
            await again.handle(M.EXPEND, [[]], "127.0.0.1:4001")
        interrupt = await again.handle(M.EXPINTERRUPT, [], "127.0.0.1:4001")
        published = again.state.get(["restarted"])
        await again.handle(M.EXPCLEANUP, [], "127.0.0.1:4001")
        with pytest.raises(Exception) as after_cleanup:
            await again.handle(M.EXPEND, [[]], "127.0.0.1:4001")
        writer.close()
        await again.close()
        return path, other, str(stop.value), interrupt, published, after_cleanup.value

    path, other, stop, interrupt, published, after_cleanup = run(main())
    frames, info = read_recording(path)
    assert info["complete"] and info["footer"]["truncated"] and info["footer"]["ignored_bytes"] == 6
    assert info["truncated_at"] == frames[-1].timestamp and [f.index for f in frames] == list(range(len(frames)))
    ended = clock_text(frames[-1].timestamp)
    assert info["warning"] == f"truncated at {ended} (rig restarted during the session)"
    assert stop == (f"rig restarted during the session; its recording ended at {ended} "
                    f"(session {REF}; closed as truncated: cam.camera.rdrec)")
    assert interrupt == [{"status": 0, "exp_ref": REF, "restarted": stop}]
    assert published["exp_ref"] == REF and published["text"] == stop
    assert restart_note(f"RigRestarted: {stop}") == f"rig restarted during the session; its recording ended at {ended}"
    assert "EXPEND with no session" in str(after_cleanup)  # the news is told until the session is put away
    assert read_recording(other)[1]["complete"] and not read_recording(other)[1]["truncated_at"]  # not ours


def test_a_clean_stop_or_shutdown_leaves_nothing_to_recover(tmp_path):
    async def main():
        svc = rig(tmp_path)
        await svc.start()
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        await svc.handle(M.EXPSTART, [REF, None], "t")
        marked = svc.unfinished.path.exists()
        await svc.close()  # SIGTERM: recorders get their footers
        again = rig(tmp_path)
        await again.start()
        return marked, again.restart, svc.unfinished.path.exists()

    marked, restart, left = run(main())
    assert marked and restart is None and not left


def test_close_truncated_leaves_a_finished_recording_alone(tmp_path):
    writer = RecordingWriter(tmp_path / "done.rdrec", {"frame_size": 2, "t0": 5.0})
    writer.write_chunk(0, [6.0], [b"ab"])
    writer.close({"stopped_at": 7.0})
    before = (tmp_path / "done.rdrec").read_bytes()
    assert close_truncated(tmp_path / "done.rdrec", "rig restarted") is None
    assert (tmp_path / "done.rdrec").read_bytes() == before


def test_a_file_of_another_format_is_left_as_it_is_and_its_last_write_is_the_end(tmp_path):
    """A video driver's file has its own crash story: the rig does not rewrite it, but still says when it ended."""
    video = tmp_path / "left.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    os.utime(video, (1_700_000_000.0, 1_700_000_000.0))
    marker = UnfinishedRecordings(tmp_path, "cams")
    marker.mark(REF, [video, tmp_path / "never-made.rdrec"])
    restart = marker.recover()
    assert video.read_bytes() == b"\x00\x00\x00\x18ftypmp42" and not marker.path.exists()
    assert restart.ended_at == 1_700_000_000.0 and restart.recordings == {str(video): {"ended_at": 1_700_000_000.0}}
    assert restart.text() == (f"rig restarted during the session; its recording ended at "
                              f"{clock_text(1_700_000_000.0)} (session {REF})")
    assert marker.recover() is None  # told once: the marker is gone
