"""Reading back what a ``video`` recorder wrote, with the same ffmpeg binary it recorded with."""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

from core.drivers.video import ffmpeg_exe


def decoded_frames(path: Path) -> int:
    """Frames in a video file, counted by decoding it all (a file that does not play fails here)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v", "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    counts = re.findall(r"frame=\s*(\d+)", out.stderr)
    assert counts, out.stderr[-500:]
    return int(counts[-1])


def stamps(path: Path) -> list[tuple[int, float]]:
    """The per-frame ``frame,wall_time`` lines of a ``<name>.timestamps.csv``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["frame", "wall_time"]
    return [(int(i), float(t)) for i, t in rows[1:]]
