"""The session journal and the experiment description: what a console did, readable after it dies.

**Journal** (``_rigdeck_journal.jsonl`` in the session folder): one JSON object per line, one line per
command sent, reply, failure, link change and phase change. Each line goes to the kernel in a *single*
``os.write`` on an ``O_APPEND`` descriptor, so a ``kill -9`` of the console loses no line already written.
It can tear the line being written: Linux stops a regular-file write between pages when a fatal signal
arrives, so a line of tens of kB can end up half there. Only the last line, though: a journal opened again
(a console reattaching) first ends a torn tail with a newline, so the fragment stays a line of its own
(reported, ignored) instead of running into the next record. :meth:`Journal.sync` (``fsync``) runs at
the end of every session step, before the next one, so a power cut loses at most the step in progress.
The reader tolerates a torn last line and bad lines and says so rather than failing.

**Experiment description** (``_rigdeck_experiment.description.yaml``): an iblrig-like summary — exp_ref,
subject, rigs and their roles, main sync, start and end times, outcome — replaced atomically (temp file
+ ``os.replace``), so a reader sees the old or the new version, never a mix.

Alyx tokens (and anything under a key that looks like a secret) are replaced by :data:`REDACTED`
before they reach either file or a log line.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

JOURNAL_NAME = "_rigdeck_journal.jsonl"
DESCRIPTION_NAME = "_rigdeck_experiment.description.yaml"
JOURNAL_VERSION = 1
REDACTED = "<redacted>"
#: phases after which a session is over (nothing left to stop)
FINAL_PHASES = frozenset({"stopped", "failed", "aborted"})

_SECRET_KEY = re.compile(r"(token|password|passwd|secret|api[_-]?key|authorization|cookie)", re.IGNORECASE)


# ----------------------------------------------------------------------------------------- redaction

def redact(value: Any) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced by :data:`REDACTED`."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_alyx(data: Any) -> Any:
    """ALYX message data ``[base_url, {user: token}]``: keep the URL and user names, hide every token.

    iblutil carries ``{user: {"token": "..."}}`` but a bare ``{user: "..."}`` is hidden too.
    """
    if isinstance(data, list | tuple) and len(data) >= 2 and isinstance(data[1], dict):
        users = {str(user): (REDACTED if tok else tok) for user, tok in data[1].items()}
        return [redact(data[0]), users, *redact(list(data[2:]))]
    return redact(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return repr(obj)


# ------------------------------------------------------------------------------------------ writing

class Journal:
    """Append-only JSON-lines writer. Not thread-safe; one per session, owned by the engine."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        self._fd: int | None = os.open(self.path, flags, 0o644)
        self.seq, torn = self._last_seq()
        if torn:  # a dead writer's half line: end it, so that our first record starts a line of its own
            os.write(self._fd, b"\n")
        self._dirty = False

    def _last_seq(self) -> tuple[int, bool]:
        """Where to continue numbering after a reattach (the file may already hold a dead console's lines),
        and whether that console left a torn last line."""
        if self.path.stat().st_size == 0:
            return 0, False
        read = read_journal(self.path)
        seq = max((int(r.get("seq", 0)) for r in read.records if isinstance(r.get("seq"), int)), default=0)
        return seq, read.torn is not None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one record (secrets redacted) and return it. One ``os.write`` per line."""
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        self.seq += 1
        record = {"seq": self.seq, "t": round(time.time(), 6), "kind": kind, **redact(fields)}
        line = (json.dumps(record, separators=(",", ":"), default=_json_default, allow_nan=False) + "\n").encode()
        view = memoryview(line)
        while view:  # a regular file takes it all at once; loop only for the disk-full / signal edge cases
            written = os.write(self._fd, view)
            view = view[written:]
        self._dirty = True
        return record

    def sync(self) -> None:
        """fsync what was written since the last sync: called at the end of every step, before the next."""
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ reading

@dataclass
class JournalRead:
    """Everything a journal file holds, plus what was wrong with it."""

    path: Path
    records: list[dict[str, Any]]
    #: the bytes of an unterminated last line (a torn write), if any
    torn: bytes | None = None
    #: (line number, problem) for complete lines that are not JSON objects
    bad_lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [f"{self.path}: line {n}: {why}" for n, why in self.bad_lines]
        if self.torn is not None:
            out.append(f"{self.path}: last line is torn ({len(self.torn)} bytes without a newline); ignored")
        return out


def read_journal(path: str | os.PathLike[str]) -> JournalRead:
    """Parse a journal; never raises for bad content (a torn or garbled line is reported, not fatal)."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    result = JournalRead(path, [], torn=tail if tail else None)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as ex:
            result.bad_lines.append((number, f"not JSON ({ex})"))
            continue
        if not isinstance(record, dict):
            result.bad_lines.append((number, f"not an object: {type(record).__name__}"))
            continue
        result.records.append(record)
    return result


@dataclass
class SessionSummary:
    """What a reattaching console needs: which rigs, the exp_ref, where the session got to."""

    path: Path
    exp_ref: str | None = None
    subject: str | None = None
    main_sync: str | None = None
    policy: str | None = None
    #: name -> {"uri", "role", "options"} as the console that started the session knew them
    rigs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: rigs still taking part (a `continue` policy may have dropped some)
    participants: list[str] = field(default_factory=list)
    #: dropped rigs that may be going on their own (no answer to EXPINIT / EXPSTART): stop stands them down
    maybe_going: list[str] = field(default_factory=list)
    phase: str = "idle"
    degraded: bool = False
    started: float | None = None
    ended: float | None = None
    #: name -> last ExpStatus int the journal saw for it (None: never answered)
    statuses: dict[str, int | None] = field(default_factory=dict)
    #: name -> last link state / last error text seen
    links: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    records: int = 0

    @property
    def finished(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def folder(self) -> Path:
        return self.path.parent


def summarize(read: JournalRead) -> SessionSummary:
    """Fold a journal's records into a :class:`SessionSummary` (later records win)."""
    s = SessionSummary(read.path, problems=read.problems, records=len(read.records))
    for rec in read.records:
        kind = rec.get("kind")
        rig = rec.get("rig")
        if kind in ("session", "attach"):
            for key in ("exp_ref", "subject", "main_sync", "policy"):
                if rec.get(key) is not None:
                    setattr(s, key, rec[key])
            if isinstance(rec.get("rigs"), dict):
                s.rigs.update(rec["rigs"])
            if isinstance(rec.get("participants"), list):
                s.participants = list(rec["participants"])
        elif kind == "phase":
            s.phase = str(rec.get("phase", s.phase))
            s.degraded = bool(rec.get("degraded", s.degraded))
            if isinstance(rec.get("participants"), list):
                s.participants = list(rec["participants"])
            if s.phase == "running" and s.started is None:
                s.started = rec.get("t")
            if s.phase in FINAL_PHASES:
                s.ended = rec.get("t")
        elif kind == "main_sync":
            s.main_sync = rec.get("main_sync", s.main_sync)
        if kind in ("degraded", "maybe_going") and isinstance(rec.get("maybe_going"), list):
            s.maybe_going = [n for n in rec["maybe_going"] if isinstance(n, str)]
        if isinstance(rig, str):
            if "status" in rec and (rec["status"] is None or isinstance(rec["status"], int)):
                s.statuses[rig] = rec["status"]
            if kind == "link" and isinstance(rec.get("state"), str):
                s.links[rig] = rec["state"]
            if isinstance(rec.get("error"), str) and kind in ("error", "timeout", "link"):
                s.errors[rig] = rec["error"]
    for name in s.participants:
        s.statuses.setdefault(name, None)
    return s


def load_session(path: str | os.PathLike[str]) -> SessionSummary:
    """Summary of the journal at ``path`` (a journal file or a session folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / JOURNAL_NAME
    return summarize(read_journal(path))


def iter_journals(data_dir: str | os.PathLike[str], since: _dt.date | None = None) -> Iterator[Path]:
    """Every session journal under a data directory (``subject/date/NNN/_rigdeck_journal.jsonl``), or only
    those of days from ``since`` on (a lab's data folder holds years of sessions)."""
    root = Path(data_dir)
    if root.is_dir():
        paths = sorted(root.glob(f"*/*/*/{JOURNAL_NAME}"))
        yield from (p for p in paths if since is None or p.parents[1].name >= since.isoformat())


def iter_sessions(data_dir: str | os.PathLike[str], since: _dt.date | None = None) -> Iterator[SessionSummary]:
    """The summary of every readable session journal under a data directory (see :func:`iter_journals`)."""
    for path in iter_journals(data_dir, since):
        try:
            yield load_session(path)
        except OSError:
            continue


def find_unfinished(data_dir: str | os.PathLike[str], since: _dt.date | None = None) -> list[SessionSummary]:
    """Sessions whose journal never reached stopped / failed / aborted: candidates for reattaching."""
    return [summary for summary in iter_sessions(data_dir, since) if not summary.finished]


# ----------------------------------------------------------------------------- experiment description

#: libyaml's emitter when PyYAML has it: ~4x faster than the pure-Python one, and the description is
#: rewritten at every session step (a 64-rig description took ~19 ms to emit in pure Python)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_yaml_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write YAML to a temp file in the same folder, fsync it, then ``os.replace`` it over the target."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    text = yaml.dump(redact(data), Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / DESCRIPTION_NAME
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an experiment description (expected a mapping)")
    return data


def iso(t: float | None) -> str | None:
    """Epoch seconds -> local ISO time with offset (what iblrig writes), None stays None."""
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")
