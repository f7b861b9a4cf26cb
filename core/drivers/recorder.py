"""Recorders: acquisition devices (camera, ephys, microphone) that write session data to disk.

A rig service starts its recorders on EXPSTART and stops them on EXPEND. The file must survive the
rig service being killed at any moment, so the format is append-only and self-checking:

``.rdrec`` file layout (all integers little-endian)::

    b"RDREC1\\n\\0"                         8-byte magic
    u32 header_len, u32 crc32(header)      then header_len bytes of UTF-8 JSON (kind, name, rate, ...)
    chunk*                                 each: b"CHNK", u32 payload_len, u32 crc32(payload), payload
    [b"END!", u32 len, u32 crc32, JSON]    footer, written by a clean stop (frames, stopped_at), or by
                                           :func:`close_truncated` after a crash (truncated, ended_at)

A chunk payload is ``u32 n`` then ``n`` records ``(u64 index, f64 timestamp, frame_size bytes)``.
Every chunk is written with one ``write`` and flushed (optionally ``fsync``-ed), so a kill -9 loses at
most the chunk being written; :func:`read_recording` then returns every complete chunk and says
"last chunk incomplete, N bytes ignored" instead of failing. A rig that restarts closes the files its
previous run left open with :func:`close_truncated` (torn tail cut, a footer marked truncated), and the
reader then reports "truncated at HH:MM:SS": the recording has an end, and says it is not the planned one.

Writes run on a one-thread executor per recorder, so a slow disk (or ``fsync``) never blocks the
event loop the rig's network servers run on.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from core.checks import is_finite
from core.drivers.base import Configurable, FaultListener, health
from core.listeners import Listeners, Unsubscribe

log = logging.getLogger(__name__)

MAGIC = b"RDREC1\n\0"
CHUNK = b"CHNK"
FOOTER = b"END!"
_U32 = struct.Struct("<I")
_CHUNK_HEAD = struct.Struct("<4sII")  # tag, payload length, crc32
_RECORD_HEAD = struct.Struct("<Qd")  # frame index, timestamp (s, epoch)
SUFFIX = ".rdrec"

#: per kind: default rate (frames or samples per second), bytes per frame, and the session-folder
#: collection the file goes into (iblrig-like names, so a session folder reads familiar)
KINDS: dict[str, dict[str, Any]] = {
    "camera": {"rate": 30.0, "frame_size": 16 * 12, "collection": "raw_video_data", "unit": "frames"},
    "ephys": {"rate": 1000.0, "frame_size": 2 * 8, "collection": "raw_ephys_data", "unit": "samples"},
    "microphone": {"rate": 2000.0, "frame_size": 2, "collection": "raw_behavior_data", "unit": "samples"},
}
MAX_RATE = 200_000.0
MAX_FRAME_SIZE = 1 << 20


class RecorderError(Exception):
    """A recorder cannot do what was asked (already running, bad settings, disk trouble)."""


@dataclass(frozen=True)
class Frame:
    """One recorded frame or sample block: its index from 0, its timestamp (epoch s) and its bytes."""

    index: int
    timestamp: float
    data: bytes


FrameListener = Callable[[str, int], None]


class Recorder(Configurable, abc.ABC):
    """An acquisition device. ``start(session_dir)`` begins writing, ``stop()`` closes the file.

    The contract (``docs/drivers.md``): ``start`` returns only once data is being acquired, or raises
    (:class:`RecorderError` or :class:`~core.drivers.base.DriverError`) with nothing left running;
    ``stop`` never raises for a device that already failed, is idempotent and leaves a closed, readable
    file. ``frames`` counts what has reached the file; listeners registered with :meth:`subscribe` are
    told ``(name, frames)`` after every chunk, so a live view can follow without polling. A failure
    while recording (disk full, camera unplugged) sets ``error`` and is told to :meth:`on_fault`
    listeners, in plain words, once.
    """

    kind: str = "recorder"
    role = "recorder"
    #: the session-folder collection the files go into (iblrig-like names)
    collection: str = "raw_data"

    def __init__(self, name: str) -> None:
        self.name = name
        self.path: Path | None = None
        self.error: str | None = None
        self.last_activity: float | None = None
        self._frames = 0
        self._listeners: Listeners[[str, int]] = Listeners(f"recorder {name}: frame listener")
        self._fault_listeners: Listeners[[str, str]] = Listeners(f"recorder {name}: fault listener")

    @property
    def frames(self) -> int:
        return self._frames

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True between a successful start and the matching stop."""

    @abc.abstractmethod
    async def start(self, session_dir: Path, exp_ref: str | None = None) -> Path:
        """Open the output file inside ``session_dir`` and begin acquiring; returns the file's path."""

    @abc.abstractmethod
    async def stop(self) -> dict[str, Any]:
        """Stop acquiring and close the file; returns a summary (path, frames, ...). Idempotent."""

    def describe(self) -> dict[str, Any]:
        """What the rig publishes about this recorder (live state, EXPINFO)."""
        return {"kind": self.kind, "frames": self.frames, "path": str(self.path) if self.path else None,
                "running": self.running}

    def subscribe(self, listener: FrameListener) -> Unsubscribe:
        return self._listeners.add(listener)

    def health(self) -> dict[str, Any]:
        """``drivers/<name>``: alive while recording, the last frame's time, the last error."""
        return health(self.running, self.last_activity, self.error, type="recorder", kind=self.kind,
                      frames=self.frames)

    def on_fault(self, listener: FaultListener) -> Unsubscribe:
        return self._fault_listeners.add(listener)

    def _fault(self, text: str) -> None:
        """Report a failure while recording (sets ``error``; listeners hear it once per session)."""
        first = self.error is None
        self.error = text
        log.error("recorder %s: %s", self.name, text)
        if first:
            self._fault_listeners.notify(self.name, text)

    def _notify(self) -> None:
        self.last_activity = time.time()
        self._listeners.notify(self.name, self._frames)


# --------------------------------------------------------------------------------------- writer

class RecordingWriter:
    """Blocking writer of one ``.rdrec`` file (used from a worker thread, or directly in tests)."""

    def __init__(self, path: Path, header: dict[str, Any], fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.frame_size = int(header["frame_size"])
        self.frames = 0
        self.chunks = 0
        self._file: BinaryIO | None = open(path, "xb")  # never overwrite an earlier recording
        body = json.dumps(header, sort_keys=True).encode()
        self._write(MAGIC + _U32.pack(len(body)) + _U32.pack(zlib.crc32(body)) + body)

    def _write(self, blob: bytes) -> None:
        assert self._file is not None
        self._file.write(blob)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def write_chunk(self, first_index: int, timestamps: list[float], frames: list[bytes]) -> None:
        """Append one chunk of consecutive frames in a single write."""
        if self._file is None:
            raise RecorderError(f"{self.path}: writer is closed")
        parts = [_U32.pack(len(frames))]
        for offset, (stamp, data) in enumerate(zip(timestamps, frames, strict=True)):
            if len(data) != self.frame_size:
                raise RecorderError(f"frame of {len(data)} bytes, expected {self.frame_size}")
            parts.append(_RECORD_HEAD.pack(first_index + offset, stamp))
            parts.append(data)
        payload = b"".join(parts)
        self._write(_CHUNK_HEAD.pack(CHUNK, len(payload), zlib.crc32(payload)) + payload)
        self.frames = first_index + len(frames)
        self.chunks += 1

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Write the footer (a clean stop) and close. Safe to call twice."""
        if self._file is None:
            return
        try:
            body = json.dumps({"frames": self.frames, "chunks": self.chunks, **(summary or {})},
                              sort_keys=True).encode()
            self._write(_CHUNK_HEAD.pack(FOOTER, len(body), zlib.crc32(body)) + body)
            if not self.fsync:  # a stop is rare: make the finished file durable even when chunks weren't
                os.fsync(self._file.fileno())
        finally:
            self._file.close()
            self._file = None

    def abandon(self) -> None:
        """Close without a footer (what a crash leaves, minus the torn chunk)."""
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------- reader

def clock_text(stamp: float) -> str:
    """An epoch time as the rig's local ``HH:MM:SS`` (how operators read the end of a recording)."""
    return time.strftime("%H:%M:%S", time.localtime(stamp))


def close_truncated(path: str | os.PathLike[str], reason: str) -> dict[str, Any] | None:
    """Give a recording its previous run left without a footer an end: cut any torn tail, append a footer
    ``{truncated: true, ended_at, reason, frames, chunks}``. ``ended_at`` is the last frame's timestamp (the
    start time ``t0`` when it has none). Returns that footer, or None when the file already has one (it was
    finished; nothing to do). Raises ValueError for a file that is no recording, OSError for disk trouble."""
    frames, info = read_recording(path, with_data=False)
    if info["complete"]:
        return None
    size = os.path.getsize(path)
    ended_at = frames[-1].timestamp if frames else float(info["header"].get("t0") or os.path.getmtime(path))
    footer = {"frames": len(frames), "chunks": info["chunks"], "truncated": True, "ended_at": ended_at,
              "reason": reason, "ignored_bytes": info["ignored_bytes"]}
    body = json.dumps(footer, sort_keys=True).encode()
    with open(path, "r+b") as out:
        out.truncate(size - info["ignored_bytes"])
        out.seek(0, os.SEEK_END)
        out.write(_CHUNK_HEAD.pack(FOOTER, len(body), zlib.crc32(body)) + body)
        out.flush()
        os.fsync(out.fileno())
    return footer


def read_recording(path: str | os.PathLike[str], with_data: bool = True) -> tuple[list[Frame], dict[str, Any]]:
    """Read a ``.rdrec`` file: ``(frames, info)``.

    Never raises for a damaged tail: ``info["complete"]`` is False when the footer is missing (the
    recorder was killed), ``info["ignored_bytes"]`` counts what could not be used and ``info["warning"]``
    says why ("last chunk incomplete, N bytes ignored", or a CRC mismatch with its offset). A file closed by
    :func:`close_truncated` is complete with ``info["truncated_at"]`` (epoch s) and the warning "truncated
    at HH:MM:SS (reason)"; otherwise ``truncated_at`` is None. Raises
    ValueError only when the file is not a recording at all (bad magic or header).
    With ``with_data=False`` frames carry empty data (cheap counting of long recordings).
    """
    blob = Path(path).read_bytes()
    if not blob.startswith(MAGIC):
        raise ValueError(f"{path}: not a RigDeck recording (bad magic)")
    pos = len(MAGIC)
    if len(blob) < pos + 8:
        raise ValueError(f"{path}: header incomplete ({len(blob)} bytes)")
    (hlen,), (hcrc,) = _U32.unpack_from(blob, pos), _U32.unpack_from(blob, pos + 4)
    pos += 8
    body = blob[pos:pos + hlen]
    if len(body) != hlen or zlib.crc32(body) != hcrc:
        raise ValueError(f"{path}: header incomplete or corrupt")
    header = json.loads(body)
    pos += hlen
    frame_size = int(header["frame_size"])
    record = _RECORD_HEAD.size + frame_size
    frames: list[Frame] = []
    info: dict[str, Any] = {"header": header, "chunks": 0, "complete": False, "footer": None,
                            "ignored_bytes": 0, "warning": None, "gaps": 0, "truncated_at": None}
    expected_index = 0
    while pos < len(blob):
        remaining = len(blob) - pos
        if remaining < _CHUNK_HEAD.size:
            info["ignored_bytes"], info["warning"] = remaining, f"last chunk incomplete, {remaining} bytes ignored"
            break
        tag, plen, crc = _CHUNK_HEAD.unpack_from(blob, pos)
        if tag not in (CHUNK, FOOTER):
            info["ignored_bytes"] = remaining
            info["warning"] = f"bad chunk tag {tag!r} at offset {pos}, {remaining} bytes ignored"
            break
        start = pos + _CHUNK_HEAD.size
        payload = blob[start:start + plen]
        if len(payload) < plen:
            info["ignored_bytes"], info["warning"] = remaining, f"last chunk incomplete, {remaining} bytes ignored"
            break
        if zlib.crc32(payload) != crc:
            tail = "last chunk" if start + plen == len(blob) else f"chunk at offset {pos}"
            info["ignored_bytes"] = remaining
            info["warning"] = f"{tail} corrupt (CRC mismatch), {remaining} bytes ignored"
            break
        pos = start + plen
        if tag == FOOTER:
            info["complete"], info["footer"] = True, json.loads(payload)
            if isinstance(info["footer"], dict) and info["footer"].get("truncated"):
                info["truncated_at"] = float(info["footer"].get("ended_at") or 0.0)
                info["warning"] = f"truncated at {clock_text(info['truncated_at'])} " \
                                  f"({info['footer'].get('reason') or 'no clean stop'})"
            if pos < len(blob):
                info["ignored_bytes"] = len(blob) - pos
                info["warning"] = f"{len(blob) - pos} bytes after the footer ignored"
            break
        (count,) = _U32.unpack_from(payload, 0)
        if len(payload) != 4 + count * record:
            info["ignored_bytes"] = len(blob) - (start - _CHUNK_HEAD.size)
            info["warning"] = f"chunk at offset {start - _CHUNK_HEAD.size} has a bad frame count, " \
                              f"{info['ignored_bytes']} bytes ignored"
            break
        for i in range(count):
            off = 4 + i * record
            index, stamp = _RECORD_HEAD.unpack_from(payload, off)
            if index != expected_index:
                info["gaps"] += 1
            expected_index = index + 1
            data = payload[off + _RECORD_HEAD.size: off + record] if with_data else b""
            frames.append(Frame(index, stamp, data))
        info["chunks"] += 1
    info["frames"] = len(frames)
    return frames, info


# ------------------------------------------------------------------------------------ simulation

def _check_rate(rate: Any) -> float:
    if not is_finite(rate):
        raise RecorderError(f"rate must be a number of frames per second, not {rate!r}")
    if not 0 < rate <= MAX_RATE:
        raise RecorderError(f"rate {rate} out of range (0, {MAX_RATE:g}]")
    return float(rate)


class SimulatedRecorder(Recorder):
    """A camera, ephys probe or microphone that produces deterministic synthetic frames at ``rate``.

    Frames are due on an ideal clock (frame ``i`` at ``t0 + i / rate``, like a hardware clock), and a
    tick every ``chunk_interval`` seconds writes whatever is due as one chunk, so a late tick catches
    up instead of dropping frames. Frame bytes encode the index, so a reader can check them.
    """

    def __init__(
        self,
        name: str,
        kind: str = "camera",
        rate: float | None = None,
        frame_size: int | None = None,
        chunk_interval: float = 0.05,
        fsync: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name)
        if kind not in KINDS:
            raise RecorderError(f"unknown recorder kind {kind!r}; known: {sorted(KINDS)}")
        self.kind = kind
        defaults = KINDS[kind]
        self.rate = _check_rate(defaults["rate"] if rate is None else rate)
        self.frame_size = int(defaults["frame_size"] if frame_size is None else frame_size)
        if not 1 <= self.frame_size <= MAX_FRAME_SIZE:
            raise RecorderError(f"frame_size must be 1..{MAX_FRAME_SIZE} bytes, not {frame_size!r}")
        if not 0.001 <= chunk_interval <= 5:
            raise RecorderError(f"chunk_interval must be 0.001..5 s, not {chunk_interval!r}")
        self.chunk_interval = float(chunk_interval)
        self.fsync = bool(fsync)
        self.clock = clock
        self.collection = str(defaults["collection"])
        self._writer: RecordingWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._t0 = 0.0
        self._m0 = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rate": self.rate, "error": self.error}

    def _frame_bytes(self, index: int) -> bytes:
        stamp = index.to_bytes(8, "little")
        reps = -(-self.frame_size // 8)
        return (stamp * reps)[: self.frame_size]

    async def start(self, session_dir: Path, exp_ref: str | None = None) -> Path:
        if self.running:
            raise RecorderError(f"recorder {self.name} is already recording to {self.path}")
        folder = Path(session_dir) / self.collection
        loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"rec-{self.name}")
        self._t0, self._m0 = self.clock(), loop.time()
        header = {"format": 1, "name": self.name, "kind": self.kind, "rate": self.rate,
                  "frame_size": self.frame_size, "exp_ref": exp_ref, "t0": self._t0,
                  "unit": KINDS[self.kind]["unit"], "record": "u64 index, f64 timestamp, frame bytes"}
        path = folder / f"{self.name}.{self.kind}{SUFFIX}"

        def open_writer() -> RecordingWriter:
            folder.mkdir(parents=True, exist_ok=True)
            return RecordingWriter(path, header, fsync=self.fsync)

        try:
            self._writer = await loop.run_in_executor(self._executor, open_writer)
        except FileExistsError:
            self._executor.shutdown(wait=False)
            raise RecorderError(f"recorder {self.name}: {path} already exists; not overwriting it") from None
        except OSError as ex:
            self._executor.shutdown(wait=False)
            raise RecorderError(f"recorder {self.name}: cannot open {path}: {ex}") from None
        self.path = path
        self._frames = 0
        self.error = None
        self._task = asyncio.create_task(self._run(), name=f"recorder-{self.name}")
        self._notify()
        return path

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._writer is not None and self._executor is not None
        try:
            while True:
                await asyncio.sleep(self.chunk_interval)
                await self._write_due(loop.time() - self._m0)
        except asyncio.CancelledError:
            raise
        except Exception as ex:  # disk full, permissions...: stop recording, say why
            self._fault(f"recording stopped: {type(ex).__name__}: {ex}")

    async def _write_due(self, elapsed: float) -> None:
        due = int(elapsed * self.rate)
        if due <= self._frames or self._writer is None or self._executor is None:
            return
        first = self._frames
        stamps = [self._t0 + i / self.rate for i in range(first, due)]
        data = [self._frame_bytes(i) for i in range(first, due)]
        # Claim the frames before awaiting the write: a stop() that cancels us mid-write must not write them
        # again. The write is shielded: cancelling a run_in_executor future that the worker has not picked up
        # yet would drop the job, and with it frames already counted; shielded, it runs in the one worker
        # thread ahead of stop's final chunk.
        self._frames = due
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(
            self._executor, self._writer.write_chunk, first, stamps, data))
        self._notify()

    async def stop(self) -> dict[str, Any]:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        writer, self._writer = self._writer, None
        executor, self._executor = self._executor, None
        if writer is not None and executor is not None:
            if self.error is None:  # write the frames due up to now, so the count matches the duration
                try:
                    await self._write_due_with(writer, executor)
                except Exception as ex:
                    self.error = f"{type(ex).__name__}: {ex}"
            summary = {"stopped_at": self.clock(), "error": self.error}
            await asyncio.get_running_loop().run_in_executor(executor, writer.close, summary)
            executor.shutdown(wait=True)
            self._notify()
        return {"path": str(self.path) if self.path else None, "frames": self.frames, "error": self.error}

    async def _write_due_with(self, writer: RecordingWriter, executor: concurrent.futures.Executor) -> None:
        self._writer, self._executor = writer, executor  # type: ignore[assignment]
        try:
            await self._write_due(asyncio.get_running_loop().time() - self._m0)
        finally:
            self._writer, self._executor = None, None

    def close_now(self) -> None:
        """Synchronous last resort (process exit without a loop): close the file without the footer."""
        if self._writer is not None:
            self._writer.abandon()
