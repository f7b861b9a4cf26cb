"""Gathering a session's files from its rigs: where they come from, where they go, what is verified.

Why a plan of its own (and not a step of :mod:`core.session`): a session ends at EXPEND, but its data is
safe only once every rig's files sit in one place with checksums that match. That takes minutes to hours,
may be interrupted (a console or rig killed, a disk full) and must resume without fetching again what
already arrived, while the next session runs. So the state of a session's transfer is its own record,
``_rigdeck_transfer.json`` in the console's session folder (beside the journal), rewritten atomically as
files complete: a console that dies mid-transfer and starts again knows what is verified and what is not,
and :func:`pending_sessions` finds every session whose files are not all verified.

Sources: a ``zmq://`` rig serves its files on its own URI; a rig reached over udp/tcp/rpc names a file
endpoint in the rigs file (``files: zmq://host:port``); any other rig is "no transfer" (iblrig rigs copy
their own data), never an error; ``transfer: false`` opts a rig out. The fetching itself (chunks,
checksums, resume) is a transport's job, reached through :class:`FileSource`; this module holds no socket.

Destination: ``<root>/<subject>/<date>/<NNN>/<rig>/<path on the rig>`` where ``root`` is ``--to DIR``,
else ``$RIGDECK_TRANSFER_DIR``, else the console's data folder (so by default the rigs' files land in the
console's own session folder). When a rig's files are all verified, its folder gets ``SHA256SUMS`` (the
format ``sha256sum -c`` reads) and the rig is asked to mark them as transferred (it deletes nothing).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import errno
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from core.checks import is_finite
from core.config import RigSpec
from core.journal import FINAL_PHASES, iter_sessions
from core.link import LinkClosed, error_text
from core.paths import session_folder
from core.protocol import format_exp_ref, parse_exp_ref
from core.workers import in_worker

log = logging.getLogger(__name__)

STATE_NAME = "_rigdeck_transfer.json"
SUMS_NAME = "SHA256SUMS"
ENV_TRANSFER_DIR = "RIGDECK_TRANSFER_DIR"
#: seconds of progress the rate (and so the ETA) is measured over
RATE_WINDOW = 3.0
#: seconds without a byte after which a fetching rig shows as stalled (no rate, no ETA)
STALLED_AFTER = 2.0
#: seconds within which a word from the rig after its last byte means it is busy, not gone (it acknowledges a
#: long request every 2 s; a rig that died sends nothing after its last chunk)
HEARD_WITHIN = 3.0
#: files of one rig fetched at once: 2 gave no more throughput on 2 cores and a worse loop lag (GIL
#: hand-offs between the hashing threads and the loop), so 1; a faster rig PC may want more
FILES_AT_ONCE = 1
#: the state file is rewritten at most this often while bytes flow (and always when a file completes)
SAVE_INTERVAL = 1.0

NO_ENDPOINT = "no transfer: no file endpoint (the rig copies its own data)"
OPTED_OUT = "no transfer: transfer: false in the rigs file"


@dataclass(frozen=True)
class Fetched:
    """One file fetched and verified: the bytes that crossed the wire (not those resumed or already there),
    and the source's file object as verified (its ``sha256`` known now, even after a quick listing)."""

    bytes: int
    file: Any


@dataclass(frozen=True)
class MarkedFile:
    """A file the rig is asked to mark as transferred: its path on the rig and the SHA-256 verified."""

    path: str
    sha256: str


class FileSource(Protocol):
    """One rig's files, as a transport serves them (``transports.zmq.file_source``)."""

    async def list_files(self, prefix: str, hashes: bool = True) -> list[Any]:
        """Files below ``prefix`` (objects with ``path``, ``size``, ``sha256``; paths relative to the rig's
        data folder, POSIX separators). Without ``hashes``: at once, ``sha256`` empty where the rig has not
        computed it yet (it does while serving the file)."""

    async def fetch_file(self, remote: Any, dest: Path, progress: Callable[[str, int, int], None]) -> Fetched:
        """Fetch one file to ``dest`` (resuming a ``.part``) and verify it."""

    async def mark_transferred(self, prefix: str, files: list[Any]) -> None:
        """Tell the rig these files (:class:`MarkedFile`) are verified on the console's side."""

    # optional: ``last_heard`` (``time.monotonic()`` of the rig's last word on this source, or None), and
    # ``partial_bytes(dest) -> int`` (bytes of ``dest`` already on disk from an interrupted fetch)

    async def close(self) -> None: ...


SourceOpener = Callable[[str, str, RigSpec | None], FileSource]


def file_source_uri(spec: RigSpec | Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(uri, None)`` where a rig's files can be fetched, or ``(None, why not)``.

    ``spec`` is a rigs-file entry, or a journal's record of one (``{"uri", "role", "options"}``).
    """
    if isinstance(spec, RigSpec):
        uri, options = spec.uri, dict(spec.options)
    else:
        uri, options = str(spec.get("uri") or ""), dict(spec.get("options") or {})
    if options.get("transfer") is False:
        return None, OPTED_OUT
    if options.get("files"):
        return str(options["files"]), None
    if uri.lower().startswith("zmq://"):
        return uri, None
    return None, NO_ENDPOINT


def transfer_root(data_dir: str | os.PathLike[str], to: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None) -> Path:
    """Where sessions are gathered: ``to``, else ``$RIGDECK_TRANSFER_DIR``, else the console's data folder;
    always absolute (the record keeps it, and a report built from another working folder must find it)."""
    env = os.environ if env is None else env
    chosen = to or env.get(ENV_TRANSFER_DIR, "").strip() or data_dir
    return Path(os.path.abspath(Path(chosen).expanduser()))


def rig_prefix(exp_ref: str) -> str:
    """The session folder relative to a rig's data folder (rigs file sessions as the console does)."""
    return session_folder(PurePosixPath(), exp_ref).as_posix()


def plain_error(ex: BaseException) -> str:
    """An error in the words an operator acts on (a full disk says so, not ``[Errno 28]``)."""
    if isinstance(ex, OSError) and ex.errno is not None:
        where = f" ({ex.filename})" if ex.filename else ""
        if ex.errno == errno.ENOSPC:
            return f"the destination disk is full{where}"
        if ex.errno == errno.EFBIG:
            return f"the destination refused to grow a file (file size limit or disk full){where}"
        if ex.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR):
            return f"cannot write to the destination: {ex.strerror}{where}"
        if ex.errno == errno.EDQUOT:
            return f"the destination's disk quota is exceeded{where}"
    if isinstance(ex, TimeoutError | asyncio.TimeoutError):
        return "the rig's file endpoint did not answer in time: is the rig running and reachable?"
    return error_text(ex)


# ------------------------------------------------------------------------------------------- the record

@dataclass
class FileEntry:
    path: str  # relative to the rig's session folder
    size: int
    sha256: str
    done: int = 0
    verified: bool = False
    #: the rig's modification time of the file when it was listed (None in records of earlier versions):
    #: with the size, what tells a verified file from one changed since, without the rig hashing it again
    mtime: float | None = None

    def same_as(self, listed: Any) -> bool:
        """Whether the rig's listed file is still this one: same size, and the same SHA-256 when the listing
        has it, else the same modification time (rsync's quick check)."""
        if listed.size != self.size:
            return False
        if listed.sha256:
            return not self.sha256 or listed.sha256 == self.sha256
        mtime = getattr(listed, "mtime", None)
        return not self.verified or (self.mtime is not None and mtime == self.mtime)


@dataclass
class RigTransfer:
    """One rig's part of a session transfer (live counters plus what is saved)."""

    name: str
    source: str | None = None
    #: why this rig is not transferred (no endpoint, opted out); None when it is
    skipped: str | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    state: str = "waiting"  # waiting | listing | fetching | verified | failed | skipped
    error: str | None = None
    #: bytes moved over the wire in this run (a resumed transfer moves only what was missing)
    fetched: int = 0
    marked: bool = False
    #: while listing and fetching: when the rig last said anything on its file link (``time.monotonic()``;
    #: None: unknown). Bytes that stop while the rig still talks (checksums) are waiting, not a dead rig.
    heard: Callable[[], float | None] = field(default=lambda: None, repr=False)
    _samples: collections.deque[tuple[float, int]] = field(default_factory=lambda: collections.deque(maxlen=64),
                                                          repr=False)
    _moved_at: float = field(default=0.0, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def done_bytes(self) -> int:
        return sum(f.size if f.verified else min(f.done, f.size) for f in self.files.values())

    @property
    def verified(self) -> bool:
        return self.state == "verified"

    @property
    def transferring(self) -> bool:
        return self.skipped is None

    def sample(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        done = self.done_bytes
        if not self._samples or done != self._samples[-1][1] or self.state != "fetching":
            self._moved_at = now
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds without a byte while fetching (0 otherwise): a rig gone mid-transfer leaves the last rate
        behind, and the link may resend for a while before it gives up; this is what says so meanwhile."""
        if self.state != "fetching" or not self._samples:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self._moved_at)

    def quiet_for(self, now: float | None = None) -> float:
        """Seconds since the rig's last word on its file link (0 before the first): while it lists a big
        session it acknowledges every 2 s, so a longer silence means it is gone."""
        heard = self.heard()
        return 0.0 if heard is None else max(0.0, (time.monotonic() if now is None else now) - heard)

    def busy(self, now: float | None = None) -> bool:
        """Whether the rig, sending no data, has spoken since its last byte and lately: alive while checksums
        are computed (the rig acknowledges the checksum of a resumed file every 2 s; the console reads back the
        part of a file it already has), not gone. A rig killed mid-transfer was last heard with its last chunk,
        before that chunk was written: never busy."""
        heard = self.heard()
        now = time.monotonic() if now is None else now
        return heard is not None and heard > self._moved_at and now - heard < HEARD_WITHIN

    def rate(self, now: float | None = None) -> float:
        """Bytes per second over the last few seconds up to ``now`` (0 when nothing moves, or stalled)."""
        if self.state != "fetching" or len(self._samples) < 2 or self.stalled_for(now) > STALLED_AFTER:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        rate = self.rate(now)
        return (self.total_bytes - self.done_bytes) / rate if rate > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "skipped": self.skipped, "state": self.state, "error": self.error,
                "marked": self.marked,
                "files": {p: {"size": f.size, "sha256": f.sha256, "verified": f.verified,
                              **({"mtime": f.mtime} if f.mtime is not None else {})}
                          for p, f in self.files.items()}}

    @classmethod
    def from_json(cls, name: str, data: Any) -> RigTransfer:
        rig = cls(name)
        if not isinstance(data, dict):
            return rig
        rig.source = data.get("source") if isinstance(data.get("source"), str) else None
        rig.skipped = data.get("skipped") if isinstance(data.get("skipped"), str) else None
        rig.error = data.get("error") if isinstance(data.get("error"), str) else None
        rig.marked = data.get("marked") is True
        state = data.get("state")
        rig.state = state if state in ("verified", "failed", "skipped") else "waiting"
        for path, f in (data.get("files") or {}).items():
            if isinstance(f, dict) and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str):
                verified = f.get("verified") is True
                mtime = f.get("mtime") if is_finite(f.get("mtime")) else None
                rig.files[str(path)] = FileEntry(str(path), f["size"], f["sha256"], f["size"] if verified else 0,
                                                 verified, float(mtime) if mtime is not None else None)
        return rig

    def summary(self) -> dict[str, Any]:
        """The CLI's per-rig JSON: files, bytes, verified, error (plus why a rig is skipped)."""
        out: dict[str, Any] = {"files": len(self.files), "bytes": self.total_bytes, "verified": self.verified,
                               "error": self.error}
        if self.skipped:
            out["skipped"] = self.skipped
        out["fetched_bytes"] = self.fetched
        return out


@dataclass
class SessionTransfer:
    """A session's transfer: its record on disk and each rig's progress."""

    exp_ref: str
    #: the console's session folder (the record lives there)
    folder: Path
    #: where this session's rig folders go (``<root>/<subject>/<date>/<NNN>``)
    to: Path
    rigs: dict[str, RigTransfer] = field(default_factory=dict)
    _saved_at: float = 0.0

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_NAME

    @property
    def transferring(self) -> list[RigTransfer]:
        return [r for r in self.rigs.values() if r.transferring]

    @property
    def verified(self) -> bool:
        """Every file of every transferring rig verified (a session with none to transfer is verified)."""
        return all(r.verified for r in self.transferring)

    @property
    def running(self) -> bool:
        return any(r.state in ("listing", "fetching") for r in self.rigs.values())

    def summary(self) -> dict[str, Any]:
        return {"exp_ref": self.exp_ref, "to": str(self.to),
                "rigs": {name: r.summary() for name, r in self.rigs.items()}}

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "exp_ref": self.exp_ref, "to": str(self.to), "verified": self.verified,
                "rigs": {name: r.to_json() for name, r in self.rigs.items()}}

    def save(self, force: bool = True) -> None:
        """Rewrite the record atomically (throttled unless ``force``); a failing disk is logged, not raised:
        the record helps resuming, the files' own ``.part`` and checksums are what make it safe."""
        now = time.monotonic()
        if not force and now - self._saved_at < SAVE_INTERVAL:
            return
        self._saved_at = now
        tmp = self.state_path.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as ex:
            log.error("cannot save the transfer record %s: %s", self.state_path, ex)


def load_transfer(folder: Path) -> dict[str, Any] | None:
    """The saved record of a session folder, or None (absent or unreadable)."""
    try:
        data = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plan_session(exp_ref: str, data_dir: str | os.PathLike[str], rigs: Mapping[str, RigSpec | Mapping[str, Any]],
                 to: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> SessionTransfer:
    """The transfer of one session over ``rigs`` (rigs-file specs or a journal's records), picking up what
    an earlier run verified. The destination is ``to``, else the earlier run's, else :func:`transfer_root`."""
    exp_ref = format_exp_ref(parse_exp_ref(exp_ref))
    folder = session_folder(data_dir, exp_ref)
    saved = load_transfer(folder) or {}
    if to is None and isinstance(saved.get("to"), str) and saved.get("exp_ref") == exp_ref:
        dest = Path(saved["to"])
    else:
        dest = session_folder(transfer_root(data_dir, to, env), exp_ref)
    same_place = isinstance(saved.get("to"), str) and Path(saved["to"]) == dest
    old_rigs = saved.get("rigs") if same_place and isinstance(saved.get("rigs"), dict) else {}
    job = SessionTransfer(exp_ref, folder, dest)
    for name, spec in rigs.items():
        uri, why_not = file_source_uri(spec)
        rig = RigTransfer.from_json(name, old_rigs.get(name)) if name in old_rigs else RigTransfer(name)
        rig.source, rig.skipped = uri, why_not
        if why_not:
            rig.state, rig.error = "skipped", None
        elif rig.state != "verified":
            rig.state = "waiting"
        job.rigs[name] = rig
    return job


# --------------------------------------------------------------------------------------------- running

def write_sums(folder: Path, files: Iterable[FileEntry]) -> Path:
    """``SHA256SUMS`` in ``folder``: ``<hex>  <path>`` lines, what ``sha256sum -c`` reads (written atomically)."""
    target = folder / SUMS_NAME
    tmp = folder / f".{SUMS_NAME}.{os.getpid()}.tmp"
    lines = [f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path)]
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, target)
    return target


async def run_rig(job: SessionTransfer, rig: RigTransfer, source: FileSource,
                  on_change: Callable[[], None] = lambda: None) -> None:
    """Fetch (or resume) one rig's files of the session, verify them, write SHA256SUMS, mark them on the rig.

    Failures end up in ``rig.error`` in plain words; nothing is marked verified unless every file is.
    """
    prefix = rig_prefix(job.exp_ref)
    dest = job.to / rig.name
    rig.error, rig.fetched = None, 0
    try:
        rig.state = "listing"
        rig.heard = lambda: getattr(source, "last_heard", None)
        await _show_partial(rig, source, dest)
        on_change()
        # a quick listing (no checksums yet: the rig computes them as it serves each file, so the first
        # bytes move at once); files verified earlier are told apart from changed ones by size and modification
        # time, or, in a record of an earlier version (no times), by their checksums: the rig then hashes the
        # whole session before the first byte moves
        quick = all(entry.mtime is not None for entry in rig.files.values() if entry.verified)
        listed = await source.list_files(prefix, hashes=not quick)
        remote = {}
        for item in listed:
            rel = PurePosixPath(item.path).relative_to(prefix).as_posix()
            remote[rel] = item
            old = rig.files.get(rel)
            if old is None or not old.same_as(item):
                rig.files[rel] = FileEntry(rel, item.size, item.sha256, mtime=getattr(item, "mtime", None))
        for gone in set(rig.files) - set(remote):
            del rig.files[gone]  # not on the rig (any more): the rig's listing is the truth
        rig.state = "fetching"
        rig._samples.clear()  # (a Retry: the last run's final sample is no measure of this one)
        rig.sample()
        on_change()
        side_by_side = asyncio.Semaphore(FILES_AT_ONCE)

        async def fetch(entry: FileEntry) -> None:
            target = dest.joinpath(*PurePosixPath(entry.path).parts)
            if entry.verified and await in_worker(_same_file, target, entry):
                return
            entry.verified = False

            def progress(_path: str, got: int, _size: int) -> None:
                entry.done = got
                rig.sample()
                job.save(force=False)
                on_change()

            async with side_by_side:
                got = await source.fetch_file(remote[entry.path], target, progress)
            rig.fetched += got.bytes
            entry.sha256, entry.done, entry.verified = got.file.sha256, entry.size, True
            entry.mtime = getattr(got.file, "mtime", None)
            job.save()
            on_change()

        await _fetch_all([fetch(e) for _, e in sorted(rig.files.items())])
        await in_worker(write_sums, dest if rig.files else _made(dest), rig.files.values())
        rig.state = "verified"
        job.save()
        on_change()
        try:
            if rig.files:  # (a rig with nothing for this session has no session folder to mark)
                # (each file with the SHA-256 it was verified with: one verified in an earlier run may be
                # listed quickly now, without a checksum)
                await source.mark_transferred(prefix, [MarkedFile(remote[rel].path, entry.sha256)
                                                       for rel, entry in rig.files.items()])
                rig.marked = True
        except Exception as ex:  # noqa: BLE001 - the data is safe here; the rig's note is a courtesy
            log.warning("rig %s: could not mark session %s as transferred: %s", rig.name, job.exp_ref, ex)
    except asyncio.CancelledError:
        rig.state = "failed"
        rig.error = "cancelled"
        raise
    except Exception as ex:  # noqa: BLE001 - every failure is the rig's error, in plain words
        rig.state = "failed"
        rig.error = plain_error(ex)
        log.warning("rig %s: transfer of %s failed: %s", rig.name, job.exp_ref, rig.error)
    finally:
        job.save()
        on_change()


async def _fetch_all(fetches: list[Coroutine[Any, Any, None]]) -> None:
    """Run a rig's file fetches; raise the first failure once they are over. A failure no other file can
    escape (the rig unreachable, its link closed, the destination unwritable) ends the others at once:
    each would otherwise wait for the same dead rig in turn before the rig is called failed."""
    tasks = [asyncio.ensure_future(f) for f in fetches]
    failures: list[BaseException] = []
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except Exception as ex:  # noqa: BLE001 - reported once all are over
                failures.append(ex)
                if isinstance(ex, OSError | LinkClosed):  # (timeouts and lost connections are OSErrors)
                    break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise failures[0]


async def _show_partial(rig: RigTransfer, source: FileSource, dest: Path) -> None:
    """Count what interrupted fetches left on disk as done before the rig is even asked: a resumed (or
    retried) rig's progress starts where its files stand, not at 0% until each file is reached."""
    partial = getattr(source, "partial_bytes", None)
    todo = [e for e in rig.files.values() if not e.verified]
    if partial is None or not todo:
        return

    def sizes() -> list[int]:
        return [partial(dest.joinpath(*PurePosixPath(e.path).parts)) for e in todo]

    for entry, size in zip(todo, await in_worker(sizes), strict=True):
        entry.done = max(entry.done, min(size, entry.size))


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _same_file(path: Path, entry: FileEntry) -> bool:
    """A file verified earlier is still there with its size (a full re-hash happens only when it is not)."""
    try:
        return path.stat().st_size == entry.size
    except OSError:
        return False


async def run_session(job: SessionTransfer, open_source: SourceOpener,
                      specs: Mapping[str, RigSpec] | None = None,
                      on_change: Callable[[], None] = lambda: None) -> SessionTransfer:
    """Run every transferring rig of ``job`` that is not verified yet, rigs side by side."""

    async def one(rig: RigTransfer) -> None:
        assert rig.source is not None
        try:
            source = open_source(rig.name, rig.source, (specs or {}).get(rig.name))
        except Exception as ex:  # noqa: BLE001 - a bad endpoint is this rig's error
            rig.state, rig.error = "failed", plain_error(ex)
            on_change()
            return
        try:
            await run_rig(job, rig, source, on_change)
        finally:
            await source.close()

    todo = [r for r in job.transferring if not r.verified]
    job.save()
    await asyncio.gather(*(one(r) for r in todo))
    return job


# ---------------------------------------------------------------------------------------------- pending

@dataclass
class PendingSession:
    exp_ref: str
    folder: Path
    #: rigs whose files are not all verified
    rigs: list[str]
    #: every rig record of the session's journal (name -> {"uri", "role", "options"})
    records: dict[str, dict[str, Any]]


def pending_sessions(data_dir: str | os.PathLike[str], since: _dt.date | None = None,
                     specs: Mapping[str, RigSpec] | None = None) -> list[PendingSession]:
    """Finished sessions (they recorded: the journal saw them running) with a transferring rig whose files
    are not all verified. A rig's source comes from ``specs`` (today's rigs file) when it names the rig,
    else from the journal's record of it."""
    out = []
    for summary in iter_sessions(data_dir, since):
        path = summary.path
        if summary.phase not in FINAL_PHASES or summary.started is None or not summary.exp_ref:
            continue
        saved = load_transfer(path.parent) or {}
        saved_rigs = saved.get("rigs") if isinstance(saved.get("rigs"), dict) else {}
        names = summary.participants or list(summary.rigs)
        missing = []
        for name in names:
            spec = (specs or {}).get(name) or summary.rigs.get(name) or {}
            uri, _ = file_source_uri(spec)
            if uri is None:
                continue
            record = saved_rigs.get(name)
            if not (isinstance(record, dict) and record.get("state") == "verified"):
                missing.append(name)
        if missing:
            out.append(PendingSession(summary.exp_ref, path.parent, missing,
                                      {n: summary.rigs.get(n, {}) for n in names}))
    return out


def pending_text(pending: list[PendingSession]) -> str:
    """``"3 sessions on 2 rigs not yet transferred"`` (empty when nothing is pending)."""
    if not pending:
        return ""
    rigs = {name for p in pending for name in p.rigs}
    s = "" if len(pending) == 1 else "s"
    r = "" if len(rigs) == 1 else "s"
    return f"{len(pending)} session{s} on {len(rigs)} rig{r} not yet transferred"


def session_rigs(pending: PendingSession, specs: Mapping[str, RigSpec] | None) -> dict[str, RigSpec | dict]:
    """The rigs to plan a pending session with: today's rigs-file entry for a rig when there is one."""
    return {name: (specs or {}).get(name) or record for name, record in pending.records.items()}
