"""The ``video`` recorder kind: a real ffmpeg (imageio-ffmpeg's) records a test pattern; the file is decoded back."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from video_helpers import decoded_frames, stamps

from core.config import ConfigError
from core.drivers.base import DriverContext
from core.drivers.video import VideoRecorder
from core.protocol import ExpMessage as M
from core.rig_config import parse_rig_config
from core.service import DriverFault, RigService
from transports.registry import TRANSPORTS

pytest.importorskip("imageio_ffmpeg")

SOURCE = "lavfi:testsrc=size=320x240:rate=30"
REF = "2026-11-30_1_KS001"


def run(coro: Any, timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())




def video_rig(tmp_path: Path, source: str = SOURCE) -> RigService:
    """A rig with one video recorder ``left``, filing sessions under ``tmp_path/data``."""
    return RigService.from_config(parse_rig_config({
        "name": "cams", "uris": ["udp://127.0.0.1:0"], "data_dir": "data",
        "drivers": {"recorders": {"left": {"kind": "video", "source": source}}}}, TRANSPORTS, "rig.yaml", tmp_path))


def test_a_five_second_session_at_30_fps_gives_150_frames_and_as_many_timestamps(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = video_rig(tmp_path)
        await svc.start()
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        before = time.time()
        await svc.handle(M.EXPSTART, [REF], "t")  # answered once the first frame has arrived
        started = time.time()
        await asyncio.sleep(5.0)  # the session's length (the input of this test, not a wait for a result)
        live = dict(svc.state.get(["recorders", "left"]))
        health = dict(svc.state.get(["drivers", "left"]))
        reply = await svc.handle(M.EXPEND, [], "t")
        end = svc.recorders["left"].stop_requested_at  # type: ignore[attr-defined]
        await svc.close()
        return before, started, end, live, health, reply

    before, started, end, live, health, reply = run(main())
    video = tmp_path / "data" / "KS001" / "2026-11-30" / "001" / "raw_video_data" / "left.mkv"
    frames = decoded_frames(video)
    times = stamps(video.with_name("left.timestamps.csv"))
    span = times[-1][1] - times[0][1]
    assert len(times) == frames and [i for i, _ in times] == list(range(frames))
    assert abs(frames - (30 * span + 1)) <= 3, (frames, span)  # every frame of the recorded span, none twice
    # 150 +- 3 for the 5 s session (first frame to the stop request), plus the frames that still came
    # while ffmpeg acted on the stop (none on an idle machine; a few when other processes hold the CPU)
    late = max(0, round(30 * (times[-1][1] - end)))
    assert abs(frames - late - round(30 * (end - times[0][1]))) <= 3, (frames, late, end - times[0][1])
    assert abs(round(30 * (end - times[0][1])) - 150) <= 3 or end - started > 5.05, (end - started)
    assert before <= times[0][1] <= started  # wall-clock stamps: the first frame came during EXPSTART
    deltas = [b - a for (_, a), (_, b) in zip(times, times[1:], strict=False)]
    assert all(d > 0 for d in deltas)
    assert abs(sum(deltas) / len(deltas) - 1 / 30) < 0.005  # the stamps follow the 30 fps source
    assert live["frames"] > 0 and live["running"] is True and live["fps"] > 0
    assert health["alive"] is True and health["last_error"] is None and health["last_activity"] >= started
    assert reply[0]["recorders"]["left"]["frames"] == frames


def test_a_source_that_cannot_open_is_an_error_at_expstart_with_ffmpegs_words(tmp_path: Path) -> None:
    async def main() -> str:
        svc = video_rig(tmp_path, "lavfi:nosuchsource=rate=30")
        await svc.start()
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        try:
            with pytest.raises(Exception) as info:
                await svc.handle(M.EXPSTART, [REF], "t")
            assert svc.status.name == "INITIALIZED"
            return str(info.value)
        finally:
            await svc.close()

    error = run(main())
    assert "could not start recording" in error and "ffmpeg ended" in error and "nosuchsource" in error
    folder = tmp_path / "data" / "KS001" / "2026-11-30" / "001" / "raw_video_data"
    assert sorted(p.name for p in folder.iterdir()) == ["left.ffmpeg.log"]  # a retry is not blocked


def test_ffmpeg_dying_mid_session_is_a_fault(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = video_rig(tmp_path)
        await svc.start()
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        await svc.handle(M.EXPSTART, [REF], "t")
        recorder = svc.recorders["left"]
        assert isinstance(recorder, VideoRecorder) and recorder._process is not None
        recorder._process.kill_now()  # the camera's process dies (a crash, not a stop)
        async with asyncio.timeout(15):
            while svc.fault is None:
                await asyncio.sleep(0.02)
        with pytest.raises(DriverFault) as info:
            await svc.handle(M.EXPSTATUS, [20], "t")
        health = svc.state.get(["drivers", "left"])
        await svc.handle(M.EXPEND, [], "t")
        await svc.close()
        return str(info.value), health

    error, health = run(main())
    assert "driver left failed: ffmpeg stopped recording" in error and "killed by SIGKILL" in error
    said = error.split("ffmpeg said:", 1)[1]
    assert not re.search(r"\b0, \d+, \d+", said)  # its words, not the per-frame checksum lines of its stdout
    assert health["alive"] is False and "ffmpeg stopped" in health["last_error"]


@pytest.mark.parametrize("options, match", [
    ({"source": "usb:0"}, "source: unknown kind 'usb'"),
    ({"source": SOURCE, "rate": 30}, "a lavfi source sets them in its graph"),
    ({"source": "v4l2:/dev/video0", "codec": "vp9"}, "codec must be one of"),
    ({"source": "v4l2:/dev/video0", "size": "big"}, "size must be WIDTHxHEIGHT"),
    ({"source": "v4l2:/dev/video0", "fps": 30}, r"unknown key\(s\) \['fps'\] for kind 'video'"),
])
def test_bad_video_options_name_the_file_and_key(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_rig_config({"name": "r", "uris": ["udp://127.0.0.1:1"],
                          "drivers": {"recorders": {"cam": {"kind": "video", **options}}}}, TRANSPORTS, "lab.yaml")
    assert str(info.value).startswith("lab.yaml: drivers.recorders.cam: ")


def test_the_probe_says_whether_a_source_opens() -> None:
    context = DriverContext()
    good = VideoRecorder.validate_options({"source": SOURCE}, context)
    bad = VideoRecorder.validate_options({"source": "v4l2:/dev/no-such-camera"}, context)
    assert run(VideoRecorder.check(good, context)) is None
    problem = run(VideoRecorder.check(bad, context))
    assert problem is not None and "cannot open v4l2:/dev/no-such-camera" in problem
