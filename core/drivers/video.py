"""FFmpeg cameras: the ``video`` recorder kind records a camera into a playable file plus frame timestamps.

The ffmpeg binary is the one the ``imageio-ffmpeg`` package ships (no system FFmpeg needed; ``ffmpeg:``
in the rig file points at another build, e.g. one with a hardware encoder). One ffmpeg process runs per
session, supervised like any external program (:mod:`core.drivers.process`)::

    drivers:
      recorders:
        left:  {kind: video, source: "v4l2:/dev/video0", rate: 30, size: 640x480}
        test:  {kind: video, source: "lavfi:testsrc=size=320x240:rate=30"}

Sources: ``v4l2:/dev/videoN`` (Linux), ``dshow:Camera Name`` (Windows), ``avfoundation:0`` or a device
name (macOS), ``lavfi:GRAPH`` (a synthetic source such as FFmpeg's test pattern, paced in real time).

Files, in ``<session>/raw_video_data/``: ``<name>.mkv`` (H.264 by default, or MJPEG; ``container: mp4``
possible), ``<name>.timestamps.csv`` (``frame,wall_time``: index from 0, epoch seconds) and
``<name>.ffmpeg.log`` (ffmpeg's own messages).

How the timestamps are made, and why this way: ffmpeg stamps every frame with the host's wall clock as
it receives it from the device (``-use_wallclock_as_timestamps``, microsecond resolution, the same
clock on every platform and device type); ``-copyts`` keeps those stamps untouched, and a second output
of the same stream (``-f framecrc`` to ffmpeg's stdout, a line per frame, flushed per frame, the pixel
data never copied) hands them to the rig, which writes the CSV as frames come. The video output resets
its own clock to zero (``setpts=PTS-STARTPTS``), so the file plays like any other. Both outputs are fed
by the same decoded frames with ``-fps_mode passthrough`` (no frame dropped or duplicated to fit a
rate), so the video holds exactly as many frames as the CSV has lines. Parsing ffmpeg's progress or
``showinfo`` log instead would give per-frame times only at six significant digits or only every half
second. MKV is the default container because a file cut short by a crash stays playable; an MP4
needs its index written at the end.

Live state (``recorders/<name>``): ``frames``, ``fps`` (over the last second), ``dropped`` (frames
missing from gaps in the timestamps, against the nominal interval), ``path``. Stopping sends ffmpeg
``q`` on stdin (clean on every platform: the file gets its trailer), then escalates like any program.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from core.checks import is_finite
from core.drivers.base import DriverContext, DriverError, health
from core.drivers.process import ProcessError, StopPolicy, SupervisedProcess
from core.drivers.recorder import Recorder, RecorderError

SOURCES = ("v4l2", "dshow", "avfoundation", "lavfi")
CODECS: dict[str, list[str]] = {
    "h264": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    "mjpeg": ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"],
}
CONTAINERS = {"mkv": "matroska", "mp4": "mp4"}
VIDEO_OPTIONS: dict[str, str] = {
    "source": "v4l2:/dev/video0 | dshow:NAME | avfoundation:NAME | lavfi:GRAPH (required)",
    "rate": "frames per second asked of the device (not for lavfi: the graph sets it)",
    "size": "WIDTHxHEIGHT asked of the device (not for lavfi)",
    "input_format": "the device's pixel format or codec (e.g. mjpeg, yuyv422)",
    "codec": "h264 (default) or mjpeg",
    "container": "mkv (default: stays playable after a crash) or mp4",
    "ffmpeg": "path of another ffmpeg binary (default: the one imageio-ffmpeg ships)",
    "ready_timeout": "seconds to wait for the first frame at EXPSTART (default 10)",
}
STOP = StopPolicy(signal="SIGINT", grace=5.0, stdin="q\n")
PROBE_TIMEOUT = 15.0


def ffmpeg_exe(path: str | None = None) -> str:
    """The ffmpeg binary: ``path`` if given, else imageio-ffmpeg's (raises DriverError if neither)."""
    if path:
        return path
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DriverError("the video kind needs the imageio-ffmpeg package (pip install imageio-ffmpeg)") from None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as ex:
        raise DriverError(f"imageio-ffmpeg has no ffmpeg binary for this platform: {ex}") from None


def input_args(options: Mapping[str, Any]) -> list[str]:
    """ffmpeg's input part for a ``source`` (and the device settings)."""
    scheme, _, target = str(options["source"]).partition(":")
    if scheme == "lavfi":
        graph = target if "realtime" in target else f"{target},realtime"  # paced like a camera
        return ["-f", "lavfi", "-i", f"{graph},settb=AVTB"]  # microsecond stamps, not 1/rate
    device: list[str] = ["-thread_queue_size", "512"]
    if options.get("rate"):
        device += ["-framerate", f"{options['rate']:g}"]
    if options.get("size"):
        device += ["-video_size", str(options["size"])]
    fmt = options.get("input_format")
    if scheme == "v4l2":
        return device + (["-input_format", fmt] if fmt else []) + ["-f", "v4l2", "-i", target]
    if scheme == "dshow":
        if fmt:
            device += ["-vcodec", fmt] if fmt in ("mjpeg", "h264") else ["-pixel_format", fmt]
        return device + ["-rtbufsize", "256M", "-f", "dshow", "-i", f"video={target}"]
    if fmt:
        device += ["-pixel_format", fmt]
    return device + ["-f", "avfoundation", "-i", target if ":" in target else f"{target}:none"]


def record_args(options: Mapping[str, Any], out: Path) -> list[str]:
    """The whole command line: the video file, and the per-frame wall-clock stamps on stdout."""
    # -stats_period: ffmpeg looks at its stdin (our "q") once per period; 0.5 s by default would add up to
    # 15 frames at 30 fps to every session's end
    return [ffmpeg_exe(options.get("ffmpeg")), "-hide_banner", "-nostats", "-stats_period", "0.02",
            "-loglevel", "info",
            "-use_wallclock_as_timestamps", "1", *input_args(options), "-copyts",
            "-map", "0:v", "-vf", "setpts=PTS-STARTPTS", "-fps_mode", "passthrough",
            *CODECS[options.get("codec", "h264")], "-f", CONTAINERS[options.get("container", "mkv")], "-n", str(out),
            "-map", "0:v", "-fps_mode", "passthrough", "-c:v", "wrapped_avframe", "-enc_time_base:v", "1:1000000",
            "-f", "framecrc", "-flush_packets", "1", "pipe:1"]


def parse_framecrc(line: str, time_base: float) -> float | None:
    """The wall time (epoch s) of one ``framecrc`` line (``stream, dts, pts, duration, size, crc``)."""
    if not line or line.startswith("#"):
        return None
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 3 or parts[0] != "0":
        return None
    try:
        return int(parts[2]) * time_base
    except ValueError:
        return None


class VideoRecorder(Recorder):
    """A camera recorded by ffmpeg (see the module docstring)."""

    kind = "video"
    collection = "raw_video_data"
    options = VIDEO_OPTIONS

    def __init__(self, name: str, source: str, rate: float | None = None, size: str | None = None,
                 input_format: str | None = None, codec: str = "h264", container: str = "mkv",
                 ffmpeg: str | None = None, ready_timeout: float = 10.0) -> None:
        super().__init__(name)
        self.settings: dict[str, Any] = {"source": source, "rate": rate, "size": size, "input_format": input_format,
                                         "codec": codec, "container": container, "ffmpeg": ffmpeg}
        self.source = source
        self.rate = rate
        self.ready_timeout = float(ready_timeout)
        self.timestamps_path: Path | None = None
        self.dropped = 0
        self.fps = 0.0
        self.stop_requested_at: float | None = None  # when ffmpeg was asked to finish (the session's end)
        self._process: SupervisedProcess | None = None
        self._csv: IO[str] | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=64)
        self._first_frame: asyncio.Future[None] | None = None
        self._time_base = 1e-6
        self._last_flush = 0.0
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._said: collections.deque[str] = collections.deque(maxlen=4)  # ffmpeg's last stderr lines

    # ------------------------------------------------------------------ configuration
    @classmethod
    def validate_options(cls, options: Mapping[str, Any], context: DriverContext) -> dict[str, Any]:
        out = dict(options)
        source = out.get("source")
        if not isinstance(source, str) or ":" not in source:
            raise ValueError(f"source must be one of {[s + ':...' for s in SOURCES]}, not {source!r}")
        scheme, _, target = source.partition(":")
        if scheme not in SOURCES or not target:
            raise ValueError(f"source: unknown kind {scheme!r} in {source!r}; use {[s + ':...' for s in SOURCES]}")
        if scheme == "lavfi" and any(out.get(k) for k in ("rate", "size", "input_format")):
            raise ValueError("rate/size/input_format: a lavfi source sets them in its graph "
                             "(e.g. lavfi:testsrc=size=320x240:rate=30)")
        rate = out.get("rate")
        if rate is not None and (not is_finite(rate) or not 0 < rate <= 10000):
            raise ValueError(f"rate must be frames per second (0, 10000], not {rate!r}")
        size = out.get("size")
        if size is not None:
            w, _, h = str(size).partition("x")
            if not (w.isdigit() and h.isdigit()):
                raise ValueError(f"size must be WIDTHxHEIGHT (e.g. 640x480), not {size!r}")
        if out.setdefault("codec", "h264") not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, not {out['codec']!r}")
        if out.setdefault("container", "mkv") not in CONTAINERS:
            raise ValueError(f"container must be one of {sorted(CONTAINERS)}, not {out['container']!r}")
        for key in ("input_format", "ffmpeg"):
            if out.get(key) is not None and not isinstance(out[key], str):
                raise ValueError(f"{key} must be text, not {out[key]!r}")
        if out.get("ffmpeg"):
            path = Path(out["ffmpeg"]).expanduser()
            out["ffmpeg"] = str(path if path.is_absolute() else context.base_dir / path)
        timeout = out.get("ready_timeout", 10.0)
        if not is_finite(timeout) or not 0 < timeout <= 600:
            raise ValueError(f"ready_timeout must be seconds in (0, 600], not {timeout!r}")
        return out

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], context: DriverContext) -> VideoRecorder:
        return cls(name, **options)

    @classmethod
    async def check(cls, options: Mapping[str, Any], context: DriverContext) -> str | None:
        """A short probe: ffmpeg opens the source and decodes one frame (nothing is written)."""
        try:
            argv = [ffmpeg_exe(options.get("ffmpeg")), "-hide_banner", "-nostdin", "-loglevel", "error",
                    *input_args(options), "-frames:v", "1", "-f", "null", "-"]
        except DriverError as ex:
            return str(ex)
        probe = SupervisedProcess(argv, name=f"probe of {options['source']}")
        try:
            await probe.start()
        except ProcessError as ex:
            return str(ex)
        try:
            end = await asyncio.wait_for(probe.wait(), PROBE_TIMEOUT)
        except TimeoutError:
            await probe.kill()
            return f"ffmpeg could not read a frame from {options['source']} within {PROBE_TIMEOUT:g} s"
        if end.code != 0:
            said = " | ".join(line for line in end.last_lines[-3:] if line.strip()) or end.describe()
            return f"ffmpeg cannot open {options['source']}: {said}"
        return None

    # ------------------------------------------------------------------ recording
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running and not self._stopping

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.source, "rate": self.rate, "fps": round(self.fps, 2),
                "dropped": self.dropped, "timestamps": str(self.timestamps_path) if self.timestamps_path else None,
                "error": self.error}

    def health(self) -> dict[str, Any]:
        return health(self.running, self.last_activity, self.error, type="recorder", kind=self.kind,
                      frames=self.frames, fps=round(self.fps, 2), dropped=self.dropped,
                      pid=self._process.pid if self._process else None)

    async def start(self, session_dir: Path, exp_ref: str | None = None) -> Path:
        """Start ffmpeg; returns once the first frame has arrived (RecorderError otherwise, ffmpeg stopped)."""
        if self.running:
            raise RecorderError(f"recorder {self.name} is already recording to {self.path}")
        folder = Path(session_dir) / self.collection
        folder.mkdir(parents=True, exist_ok=True)
        suffix = self.settings["container"]
        path = folder / f"{self.name}.{suffix}"
        if path.exists():
            raise RecorderError(f"recorder {self.name}: {path} already exists; not overwriting it")
        try:
            argv = record_args(self.settings, path)
        except DriverError as ex:
            raise RecorderError(f"recorder {self.name}: {ex}") from None
        self.path, self.timestamps_path = path, folder / f"{self.name}.timestamps.csv"
        self._frames, self.dropped, self.fps, self.error, self._stopping = 0, 0, 0.0, None, False
        self._recent.clear()
        self._csv = open(self.timestamps_path, "x", encoding="ascii", newline="\n")  # noqa: SIM115
        self._csv.write("frame,wall_time\n")
        proc = SupervisedProcess(argv, name=f"ffmpeg {self.name}", log_path=folder / f"{self.name}.ffmpeg.log",
                                 stdin_pipe=True)
        self._first_frame = asyncio.get_running_loop().create_future()
        proc.on_line(self._on_stamp, "stdout")
        # what ffmpeg *said* is on stderr; stdout carries one checksum line per frame, useless to an operator
        self._said.clear()
        proc.on_line(lambda _stream, line: self._said.append(line), "stderr")
        self._process = proc
        try:
            await proc.start()
        except ProcessError as ex:
            self._close_csv()
            raise RecorderError(f"recorder {self.name}: {ex}") from None
        exited = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait({self._first_frame, exited}, timeout=self.ready_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if self._first_frame not in done:
            problem = "no frame" if proc.running else f"ffmpeg ended ({proc.exit.describe() if proc.exit else '?'})"
            await proc.stop(STOP)
            self._close_csv()
            if self._frames == 0:  # nothing recorded: leave no empty files to block a retried EXPSTART
                for leftover in (path, self.timestamps_path):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
            said = " | ".join(line for line in self._said if line.strip()) or "(no output)"
            self.error = f"{problem} from {self.source} within {self.ready_timeout:g} s; ffmpeg said: {said}"
            raise RecorderError(f"recorder {self.name}: {self.error}")
        self._watch = asyncio.create_task(self._watch_exit(proc), name=f"video-{self.name}-watch")
        return path

    def _on_stamp(self, _stream: str, line: str) -> None:
        if line.startswith("#tb 0:"):
            num, _, den = line.split(":", 1)[1].strip().partition("/")
            with contextlib.suppress(ValueError, ZeroDivisionError):
                self._time_base = int(num) / int(den)
            return
        stamp = parse_framecrc(line, self._time_base)
        if stamp is None or self._csv is None:
            return
        self._csv.write(f"{self._frames},{stamp:.6f}\n")
        self._count_gap(stamp)
        self._frames += 1
        now = time.time()
        if now - self._last_flush > 0.5:
            self._csv.flush()
            self._last_flush = now
        if self._first_frame is not None and not self._first_frame.done():
            self._first_frame.set_result(None)
        self._notify()

    def _count_gap(self, stamp: float) -> None:
        """Dropped frames: a gap of k nominal intervals means k - 1 frames missing (nominal: ``rate``, else
        the median interval seen so far, which a few drops do not move)."""
        recent = self._recent
        if recent:
            intervals = [b - a for a, b in zip(recent, list(recent)[1:], strict=False)]
            nominal = 1.0 / self.rate if self.rate else (statistics.median(intervals) if len(intervals) >= 4 else 0)
            gap = stamp - recent[-1]
            if nominal > 0 and gap > 1.5 * nominal:
                self.dropped += max(0, round(gap / nominal) - 1)
        recent.append(stamp)
        window = [t for t in recent if t > stamp - 1.0]
        self.fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and window[-1] > window[0] else 0.0

    async def _watch_exit(self, proc: SupervisedProcess) -> None:
        end = await proc.wait()
        if proc.stopping or self._stopping:
            return
        said = " | ".join(line for line in self._said if line.strip()) or "(no output)"
        self._close_csv()
        self._fault(f"ffmpeg stopped recording {self.source} mid-session ({end.describe()}); ffmpeg said: {said}")
        self._notify()

    async def stop(self) -> dict[str, Any]:
        """Ask ffmpeg to finish (``q``), wait for its trailer, close the timestamps. Idempotent."""
        proc = self._process
        if proc is not None:
            self._stopping = True
            self.stop_requested_at = time.time()
            end = await proc.stop(STOP)
            if self._watch is not None:
                await asyncio.gather(self._watch, return_exceptions=True)
            if end.code not in (0, None) and self.error is None and end.by != "stdin":
                self.error = f"ffmpeg {end.describe()} after {end.by}"
            self._close_csv()
            self._process = None
            self._notify()
        return {"path": str(self.path) if self.path else None, "frames": self.frames, "dropped": self.dropped,
                "timestamps": str(self.timestamps_path) if self.timestamps_path else None, "error": self.error}

    def _close_csv(self) -> None:
        if self._csv is not None:
            with contextlib.suppress(OSError):
                self._csv.close()
            self._csv = None

    def close_now(self) -> None:
        """Synchronous last resort (process exit without a loop)."""
        if self._process is not None:
            self._process.kill_now()
        self._close_csv()

