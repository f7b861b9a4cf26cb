"""Recorders: the .rdrec file is valid after a stop, and a torn tail is reported, never fatal."""

import asyncio
import struct
import zlib

import pytest
from helpers import run, wait_until

from core.drivers.recorder import (
    CHUNK,
    RecorderError,
    RecordingWriter,
    SimulatedRecorder,
    read_recording,
)


def write_file(path, chunks=3, per_chunk=4, frame_size=6, close=True):
    writer = RecordingWriter(path, {"name": "cam", "kind": "camera", "rate": 10.0, "frame_size": frame_size})
    index = 0
    for _ in range(chunks):
        writer.write_chunk(index, [float(index + i) for i in range(per_chunk)],
                           [bytes([index + i]) * frame_size for i in range(per_chunk)])
        index += per_chunk
    if close:
        writer.close({"stopped_at": 1.0})
    else:
        writer.abandon()
    return index


def test_writer_reader_round_trip(tmp_path):
    path = tmp_path / "a.rdrec"
    n = write_file(path)
    frames, info = read_recording(path)
    assert [f.index for f in frames] == list(range(n))
    assert frames[5].timestamp == 5.0 and frames[5].data == bytes([5]) * 6
    assert info["complete"] and info["warning"] is None and info["ignored_bytes"] == 0
    assert info["chunks"] == 3 and info["footer"]["frames"] == n and info["gaps"] == 0


@pytest.mark.parametrize("cut", [1, 5, 11, 20])
def test_torn_last_chunk_is_reported_not_fatal(tmp_path, cut):
    path = tmp_path / "a.rdrec"
    write_file(path, close=False)
    blob = path.read_bytes()
    path.write_bytes(blob[:-cut])  # a kill -9 in the middle of the last write
    frames, info = read_recording(path)
    assert len(frames) == 8  # the two complete chunks
    assert not info["complete"]
    chunk_len = 12 + 4 + 4 * (16 + 6)
    assert info["ignored_bytes"] == chunk_len - cut
    assert info["warning"] == f"last chunk incomplete, {chunk_len - cut} bytes ignored"


def test_no_footer_but_whole_chunks_is_incomplete_without_warning(tmp_path):
    path = tmp_path / "a.rdrec"
    write_file(path, close=False)
    frames, info = read_recording(path)
    assert len(frames) == 12 and not info["complete"] and info["ignored_bytes"] == 0 and info["warning"] is None


def test_corrupt_middle_chunk_stops_with_offset(tmp_path):
    path = tmp_path / "a.rdrec"
    write_file(path)
    blob = bytearray(path.read_bytes())
    second = blob.index(CHUNK, blob.index(CHUNK) + 1)
    blob[second + 20] ^= 0xFF
    path.write_bytes(bytes(blob))
    frames, info = read_recording(path)
    assert len(frames) == 4
    assert f"chunk at offset {second} corrupt (CRC mismatch)" in info["warning"]


def test_not_a_recording(tmp_path):
    path = tmp_path / "x.rdrec"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a RigDeck recording"):
        read_recording(path)


def test_crc_is_crc32_of_payload(tmp_path):
    path = tmp_path / "a.rdrec"
    write_file(path, chunks=1)
    blob = path.read_bytes()
    at = blob.index(CHUNK)
    _, length, crc = struct.unpack_from("<4sII", blob, at)
    assert zlib.crc32(blob[at + 12: at + 12 + length]) == crc


def test_simulated_recorder_writes_at_rate_and_closes(tmp_path):
    async def main():
        rec = SimulatedRecorder("cam", "camera", rate=200.0, chunk_interval=0.01)
        seen = []
        rec.subscribe(lambda name, frames: seen.append(frames))
        path = await rec.start(tmp_path, "2026-11-23_1_KS001")
        assert rec.running and path.exists() and path.parent.name == "raw_video_data"
        await wait_until(lambda: rec.frames >= 10, what="10 frames")
        summary = await rec.stop()
        assert not rec.running
        again = await rec.stop()  # idempotent
        return rec, summary, again, seen

    rec, summary, again, seen = run(main())
    frames, info = read_recording(rec.path)
    assert info["complete"] and info["warning"] is None
    assert len(frames) == rec.frames == summary["frames"] == again["frames"] >= 10
    assert info["header"]["exp_ref"] == "2026-11-23_1_KS001" and info["header"]["kind"] == "camera"
    assert [f.index for f in frames] == list(range(len(frames)))
    # ideal hardware clock: frame i at t0 + i / rate
    t0 = info["header"]["t0"]
    assert all(abs(f.timestamp - (t0 + f.index / 200.0)) < 1e-6 for f in frames)
    assert frames[3].data[:8] == (3).to_bytes(8, "little")
    assert seen and seen == sorted(seen)


def test_start_twice_refused_and_no_overwrite(tmp_path):
    async def main():
        rec = SimulatedRecorder("mic", "microphone", rate=100.0)
        await rec.start(tmp_path)
        with pytest.raises(RecorderError, match="already recording"):
            await rec.start(tmp_path)
        await rec.stop()
        with pytest.raises(RecorderError, match="already exists"):
            await rec.start(tmp_path)

    run(main())


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "lidar"}, "unknown recorder kind"),
    ({"rate": 0}, "out of range"),
    ({"rate": float("nan")}, "rate must be"),
    ({"rate": True}, "rate must be"),
    ({"frame_size": 0}, "frame_size"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(RecorderError, match=match):
        SimulatedRecorder("x", **kwargs)


def test_stop_writes_frames_due_at_stop(tmp_path):
    """A stop right after start still records what was due (nothing silently dropped)."""
    async def main():
        rec = SimulatedRecorder("eph", "ephys", rate=10000.0, chunk_interval=5)
        await rec.start(tmp_path)
        await asyncio.sleep(0.05)
        return await rec.stop()

    summary = run(main())
    assert summary["frames"] >= 400  # 10 kHz for >= 50 ms


def test_stop_while_a_chunk_waits_for_the_busy_writer_still_writes_it(tmp_path):
    """The writer thread is busy (a slow disk) when a chunk is handed to it, and stop() comes before the
    thread picks the chunk up: the chunk is still written, so the file holds every frame counted (cancelling
    the recording task used to cancel the queued write too, and the file came up a chunk short)."""
    import threading

    async def main():
        rec = SimulatedRecorder("cam", "camera", rate=200.0, chunk_interval=0.01)
        await rec.start(tmp_path, "2026-11-23_1_KS001")
        disk_free = threading.Event()
        rec._executor.submit(disk_free.wait, 10)  # the one writer thread is busy with something slow
        await wait_until(lambda: rec.frames > 0, what="a chunk claimed, its write queued behind")
        stopping = asyncio.ensure_future(rec.stop())
        await wait_until(lambda: not rec.running, what="stop() to cancel the recording task")
        disk_free.set()
        return rec, await stopping

    rec, summary = run(main())
    frames, info = read_recording(rec.path)
    assert info["complete"] and len(frames) == summary["frames"] == rec.frames > 0
    assert [f.index for f in frames] == list(range(len(frames)))


def test_stop_during_a_slow_write_never_writes_a_frame_twice(tmp_path, monkeypatch):
    """A slow disk: stop() cancels the recording task while a chunk is still being written in the worker
    thread. The frames of that chunk must not be written again by stop's final write."""
    import threading
    import time as _time

    in_write = threading.Event()
    original = RecordingWriter.write_chunk

    def slow_write(self, first, stamps, data):
        in_write.set()
        _time.sleep(0.2)
        return original(self, first, stamps, data)

    monkeypatch.setattr(RecordingWriter, "write_chunk", slow_write)

    async def main():
        rec = SimulatedRecorder("eph", "ephys", rate=1000.0, chunk_interval=0.01)
        await rec.start(tmp_path, "2026-11-23_1_KS001")
        await wait_until(in_write.is_set, what="a chunk being written")
        await rec.stop()
        return rec

    rec = run(main())
    frames, info = read_recording(rec.path)
    assert info["complete"] and frames
    assert [f.index for f in frames] == list(range(len(frames)))
