"""A rig's unfinished recordings: what a rig killed mid-session leaves behind, and how its next run ends them.

While its recorders run, a rig keeps a small marker file in its data folder naming the session and the
files being written; a clean stop (EXPEND, EXPINTERRUPT, a SIGTERM'd ``rigdeck serve``) removes it. A rig
that starts and finds its marker was killed (kill -9, a power cut) during that session: it closes every
file the marker lists as truncated (:func:`core.drivers.recorder.close_truncated`, so a reader says
"truncated at HH:MM:SS" instead of "no footer") and keeps a :class:`RigRestart` note. Its answers to the
console that comes to stop the session carry the note (an EXPEND error, an EXPINTERRUPT reply field), so the
operator reads "rig restarted during the session; its recording ended at HH:MM:SS", not a bare failure.

The marker names this rig's own files (never "every file in the session folder"): rigs sharing a data folder
share session folders, and another rig's live recording must not be touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.drivers.recorder import SUFFIX, clock_text, close_truncated
from core.steps import Outcome

log = logging.getLogger(__name__)

#: the words both ends agree on: the rig says them, a console finds them in an error or a reply
RESTARTED = "rig restarted during the session"
_NOTE = re.compile(re.escape(RESTARTED) + r"(?:; its recording ended at \d\d:\d\d:\d\d|; it was not recording)")


@dataclass(frozen=True)
class RigRestart:
    """A session this rig was running when its previous run died, and how its recordings ended."""

    exp_ref: str | None
    #: epoch s of the last frame written, over every recording (None: nothing was recorded)
    ended_at: float | None
    #: path -> the truncated footer written; {"ended_at": last write} for a file of another format (a video
    #: driver's: left as it is) or {"error": why it could not be closed, "ended_at": last write}
    recordings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def text(self) -> str:
        """What the rig answers: the plain words first (a console shows those), then the details."""
        closed = ", ".join(Path(p).name for p, r in self.recordings.items() if r.get("truncated"))
        if self.ended_at is None:
            return f"{RESTARTED}; it was not recording (session {self.exp_ref})"
        details = f"session {self.exp_ref}" + (f"; closed as truncated: {closed}" if closed else "")
        return f"{RESTARTED}; its recording ended at {clock_text(self.ended_at)} ({details})"

    def as_dict(self) -> dict[str, Any]:
        return {"exp_ref": self.exp_ref, "ended_at": self.ended_at, "text": self.text(),
                "recordings": sorted(self.recordings)}


def restart_note(text: Any) -> str | None:
    """The plain words a console shows when a rig's error or reply says it restarted mid-session, else None."""
    found = _NOTE.search(text) if isinstance(text, str) else None
    return found.group(0) if found else None


class UnfinishedRecordings:
    """The marker file of one rig (``<data_dir>/_rigdeck_<rig>_recording.json``)."""

    def __init__(self, data_dir: str | os.PathLike[str], rig: str) -> None:
        self.path = Path(data_dir) / f"_rigdeck_{rig}_recording.json"

    def mark(self, exp_ref: str | None, paths: Iterable[Path | str]) -> None:
        """Recording has started: name the session and files (written whole, then renamed into place)."""
        body = json.dumps({"exp_ref": exp_ref, "paths": [str(p) for p in paths], "pid": os.getpid(),
                           "since": time.time()})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            spare = self.path.with_suffix(".tmp")
            spare.write_text(body, encoding="utf-8")
            os.replace(spare, self.path)
        except OSError as ex:  # the recording goes on; only a crash's report would be poorer
            log.warning("cannot write %s (a restart could not name its unfinished recordings): %s", self.path, ex)

    def clear(self) -> None:
        """Recording stopped cleanly: nothing to recover."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as ex:
            log.warning("cannot remove %s: %s", self.path, ex)

    def recover(self) -> RigRestart | None:
        """At start-up: if the previous run died recording, close its files as truncated and say so."""
        try:
            marker = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as ex:
            log.warning("unreadable %s, ignored: %s", self.path, ex)
            self.clear()
            return None
        marker = marker if isinstance(marker, dict) else {}
        recordings: dict[str, dict[str, Any]] = {}
        ends: list[float] = []
        for path in map(str, marker.get("paths") or []):
            try:
                last_write = os.path.getmtime(path)
            except OSError:
                continue  # killed before the file was made
            if not path.endswith(SUFFIX):  # another driver's format: its end is its last write
                recordings[path] = {"ended_at": last_write}
                ends.append(last_write)
                continue
            try:
                footer = close_truncated(path, "rig restarted during the session")
            except (OSError, ValueError) as ex:
                recordings[path] = {"error": str(ex), "ended_at": last_write}
                ends.append(last_write)
                log.error("cannot close the unfinished recording %s: %s", path, ex)
                continue
            if footer is not None:
                recordings[path] = footer
                ends.append(float(footer["ended_at"]))
        self.clear()
        exp_ref = marker.get("exp_ref") if isinstance(marker.get("exp_ref"), str) else None
        restart = RigRestart(exp_ref, max(ends) if ends else None, recordings)
        log.warning("%s", restart.text())
        return restart


def restart_notes(outcomes: Mapping[str, Outcome]) -> list[str]:
    """``"cams: rig restarted during the session; its recording ended at 12:00:01"`` for each rig whose
    answer (an EXPEND error, an EXPINTERRUPT reply) says it died and was started again mid-session: the
    operator must learn the data ends early, not just that a rig "did not confirm"."""
    notes = []
    for name, outcome in outcomes.items():
        last = outcome.reply[-1] if outcome.reply else None
        said = outcome.error if not outcome.ok else (last.get("restarted") if isinstance(last, dict) else None)
        note = restart_note(said)
        if note is not None:
            notes.append(f"{name}: {note}")
    return notes
