"""Session-file transfer over ``zmq://``: list a rig's files, fetch them in checked, resumable chunks.

Rig side, :class:`FileStore`: serves files below the rig's data folder only (no absolute paths, no
``..``, no symlinks leading out), lists them with size and SHA-256, and reads chunks. Reading and hashing run
in worker threads so a large checksum never stalls heartbeats. A file fetched in order from its start is
hashed from the very bytes served (:class:`_Serving`), so a console can list quickly (``"sha256": false``:
only checksums already known) and ask for each file's checksum once it has it: the first bytes move at once
instead of after a whole session was read and hashed, and the rig reads each file once, not twice.

Console side, :func:`fetch_files`: each file is written to ``NAME.part`` next to its final place and checked
against the rig's SHA-256 (from the listing, or asked for once the file is fetched: a file whose size or
modification time is then not the listed one is "changed on the rig after it was listed") before it is
renamed into place. A file whose SHA-256 is wrong is listed
again on its own: if the rig's copy changed since the listing, that is the error; otherwise the pieces that
differ are found by comparing CRC-32s of every piece on both sides, and only those are fetched again (up to
``chunk_retries`` times in all). An interrupted transfer resumes from the ``.part`` file's length (a ``.part``
that is not a prefix of the file is mended the same way). A file already present with the right checksum is
skipped. Progress goes to ``progress(path, written_bytes, size_bytes)`` as chunks are written.
(Autopilot sends a whole file as one base64 message and waits forever if it is lost.)

Speed (see the README's transfer benchmark): up to ``window`` chunk requests are in flight at once and up to
``window`` chunks wait for the file's writer thread, which writes and hashes them in order while the next ones
arrive; megabyte chunks stay in libzmq's buffers on both ends (sent and received by reference, never copied
by Python); the SHA-256 is computed as the chunks arrive instead of re-reading the file. No CRC travels with
each chunk: TCP checks every segment (CURVE authenticates it), and a CRC of every megabyte on both ends cost
a fifth of the throughput; the whole-file SHA-256 catches what TCP would miss and the piece-wise CRCs find it.

Durability: a complete file is fsync'ed before it is renamed into place, so "verified" (and the rig's mark)
never stands for bytes still in the page cache that a power cut would lose.

Marks: after the console verified a rig's files it sends ``MARK``; the rig writes (atomically) or extends
``_rigdeck_transferred.json`` in the session folder with each file's SHA-256 as it is *now* on the rig,
so a file changed later is never taken for transferred. The rig never deletes anything.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import errno
import hashlib
import json
import logging
import mmap
import os
import queue
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.checks import is_int, is_number
from core.workers import in_worker

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1024 * 1024
MAX_CHUNK = 4 * 1024 * 1024
#: chunk requests in flight at once per file (8 x 1 MiB kept loopback busy; 4 left it idle ~40% of the time)
DEFAULT_WINDOW = 8
#: times one chunk is asked for again when it arrives damaged (free when nothing is damaged; with chunks in
#: flight side by side a run of bad luck on one chunk must not end the transfer)
CHUNK_RETRIES = 8
MAX_LISTED = 20000
#: a console asks for per-piece CRC-32s of at most this much of a file at once (a read of ~0.2 s)
MAX_CRC_RANGE = 256 * 1024 * 1024
MIN_CRC_CHUNK = 4096
#: files hashed at once for a listing
HASH_THREADS = min(4, os.cpu_count() or 1)
PART_SUFFIX = ".part"
#: written by the rig in a session folder when a console verified its files (never listed, never served)
MARK_NAME = "_rigdeck_transferred.json"

Progress = Callable[[str, int, int], None]
#: ``request(key, value) -> (reply_value, blob)``: one FILES/FETCH round trip through the link
Requester = Callable[[str, dict[str, Any]], Awaitable[tuple[Any, bytes | None]]]


class FileAccessError(ValueError):
    """A path the rig refuses to serve, or a file it cannot read (the text says which and why)."""


class TransferError(RuntimeError):
    """A file could not be fetched intact after every attempt."""


@dataclass
class FetchCount:
    """Bytes a fetch moved over the wire, took from a partial file, or found already in place: what a
    resumed transfer really re-fetched (tests and the progress display read it)."""

    fetched: int = 0
    resumed: int = 0
    present: int = 0


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative, POSIX separators
    size: int
    sha256: str  # "" when the rig had not computed it yet (a quick listing)
    mtime: float = 0.0

    @classmethod
    def from_wire(cls, item: Any) -> RemoteFile:
        if not isinstance(item, dict):
            raise TransferError(f"file listing entry is not an object: {item!r:.60}")
        path, size, digest, mtime = item.get("path"), item.get("size"), item.get("sha256"), item.get("mtime")
        if not isinstance(path, str) or not is_int(size) or size < 0 or not isinstance(digest, str | None) \
                or not (mtime is None or is_number(mtime)):
            raise TransferError(f"file listing entry malformed: {item!r:.80}")
        safe_relative(path)
        return cls(path, size, digest or "", float(mtime or 0.0))


def safe_relative(path: str) -> PurePosixPath:
    """A relative path with no ``..``, no drive, no absolute root; FileAccessError otherwise."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise FileAccessError(f"bad file path {path!r:.80}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or ":" in pure.parts[0]:
        raise FileAccessError(f"path {path!r:.80} must be relative to the session folder, without '..'")
    return pure


def sha256_file(path: Path, start_hash: Any = None) -> str:
    digest = start_hash or hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _crcs(f: Any, offset: int, length: int, chunk: int) -> list[int]:
    """CRC-32 of each ``chunk`` of ``f`` in ``[offset, offset + length)``."""
    f.seek(offset)
    out = []
    while length > 0:
        data = f.read(min(chunk, length))
        if not data:
            break
        out.append(zlib.crc32(data))
        length -= len(data)
    return out


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file is still the one whose bytes were hashed (replaced, grown or rewritten: not)."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class _Serving:
    """One file being served: its chunks read in request order by a thread of its own, and its SHA-256
    computed from the very bytes sent, as long as they come in order from the start.

    Why: a console fetching a session asks for each file's chunks in order, so the rig can hash what it
    sends instead of reading every file once more for the listing's checksum before the first byte moves
    (a cold 1 GiB listing took 0.5 s here, and on a rig whose files are no longer in memory it reads the
    whole session from disk twice). Chunks asked for out of order (a repair, a resumed file) are served
    all the same; the file's checksum is then computed from disk when asked for.
    """

    def __init__(self, path: Path, digests: dict[tuple[str, int, int], str]) -> None:
        self.path = path
        self.digests = digests
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.identity = _identity(os.fstat(self.file.fileno()))
        self.hash: Any = hashlib.sha256()
        self.hashed = 0
        self.used = time.monotonic()
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rigdeck-serve")

    def read(self, offset: int, length: int) -> tuple[bytes, int]:
        """(In the file's thread.) ``(data, file_size)``, hashing ``data`` when it continues the hash."""
        self.used = time.monotonic()
        stat = os.fstat(self.file.fileno())
        self.file.seek(offset)
        data = self.file.read(length)
        if self.hash is not None and offset == self.hashed and data:
            self.hash.update(data)
            self.hashed += len(data)
            if self.hashed == stat.st_size:
                self._finish(stat)
        return data, stat.st_size

    def _finish(self, stat: os.stat_result) -> None:
        try:
            unchanged = _identity(os.stat(self.path)) == _identity(stat) == self.identity
        except OSError:
            unchanged = False
        if unchanged:
            self.digests[(str(self.path), stat.st_size, stat.st_mtime_ns)] = self.hash.hexdigest()
        self.hash = None  # (a file changed while it was served: its checksum is computed from disk)

    def close(self) -> None:
        """Close the file after the reads already asked for (their replies still go out)."""
        self.thread.submit(self.file.close)
        self.thread.shutdown(wait=False)


class FileStore:
    """The rig side: files below ``root``."""

    #: files served at once with a running checksum (more consoles or files than this: the least recently
    #: used stops, its checksum is computed from disk when asked for)
    MAX_SERVING = 16
    #: seconds after which a file nobody asked for more of is closed
    SERVING_IDLE = 60.0

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self._digests: dict[tuple[str, int, int], str] = {}
        # one listing at a time: a resent FILES request waits for the first one's checksums instead of
        # hashing the same gigabytes again in a second thread
        self._listing = threading.Lock()
        self._serving: dict[str, _Serving] = {}

    def _resolve(self, rel: str) -> Path:
        pure = safe_relative(rel)
        full = (self.root / pure).resolve()
        if full != self.root and self.root not in full.parents:
            raise FileAccessError(f"path {rel!r:.80} leads outside the data folder")
        return full

    def _digest(self, path: Path, stat: os.stat_result) -> str:
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            if len(self._digests) > 4 * MAX_LISTED:
                self._digests.clear()
            self._digests[key] = sha256_file(path)
        return self._digests[key]

    def list_files(self, prefix: str = "", hashes: bool = True) -> list[dict[str, Any]]:
        """The files below ``prefix``: path, size, mtime and SHA-256. With ``hashes`` false, only the
        checksums already known (a file served whole since it last changed, or listed before) are given,
        the others are ``None``: the listing is instant, and a console asks for each file's checksum once it
        has fetched it (computed as it was served)."""
        if not hashes:
            return self._list_files(prefix, hashes=False)
        with self._listing:
            return self._list_files(prefix)

    def _list_files(self, prefix: str, hashes: bool = True) -> list[dict[str, Any]]:
        base = self._resolve(prefix) if prefix else self.root
        if not base.exists():
            return []
        if base.is_file():
            candidates = [base]
        else:
            candidates = sorted(p for p in base.rglob("*") if p.is_file())
        out = []
        for path in candidates:
            real = path.resolve()
            if self.root not in real.parents:  # a symlink pointing out of the data folder
                continue
            if path.name.endswith(PART_SUFFIX) or path.name == MARK_NAME:
                continue
            stat = real.stat()
            out.append({"path": path.relative_to(self.root).as_posix(), "size": stat.st_size,
                        "mtime": stat.st_mtime, "real": real, "stat": stat})
            if len(out) > MAX_LISTED:
                raise FileAccessError(f"more than {MAX_LISTED} files under {prefix or 'the data folder'!r}; "
                                      "list a sub-folder")
        if not hashes:
            for item in out:
                real, stat = item.pop("real"), item.pop("stat")
                item["sha256"] = self._digests.get((str(real), stat.st_size, stat.st_mtime_ns))
            return out
        # checksums of a session's big files side by side: hashlib lets go of the GIL, so a rig PC's cores
        # share a cold listing (the console waits for it before the first byte moves)
        with concurrent.futures.ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="rigdeck-hash") as pool:
            digests = list(pool.map(lambda item: self._digest(item.pop("real"), item.pop("stat")), out))
        for item, digest in zip(out, digests, strict=True):
            item["sha256"] = digest
        return out

    async def read_served(self, rel: str, offset: int, length: int) -> tuple[bytes, int]:
        """A chunk of a file being served (see :class:`_Serving`); called on the event loop. The path is
        checked and resolved once per file served, not per chunk (resolving took a third of the loop's time)."""
        length = max(0, min(int(length), MAX_CHUNK))
        now = time.monotonic()
        for stale in [r for r, s in self._serving.items() if now - s.used > self.SERVING_IDLE]:
            self._serving.pop(stale).close()
        serving = self._serving.get(rel)
        if serving is None:
            path = self._resolve(rel)
            if not path.is_file():
                raise FileAccessError(f"no such file {rel!r:.80}")
            if len(self._serving) >= self.MAX_SERVING:
                self._serving.pop(min(self._serving, key=lambda r: self._serving[r].used)).close()
            serving = self._serving[rel] = _Serving(path, self._digests)  # (here: two requests, one file)
        serving.used = now
        data, size = await asyncio.wrap_future(serving.thread.submit(serving.read, offset, length))
        if serving.hash is None or serving.hashed == size:  # done (or changed): its checksum is known or must
            if self._serving.get(rel) is serving:       # come from disk; a later request opens it afresh
                self._serving.pop(rel).close()
        return data, size

    def read_chunk(self, rel: str, offset: int, length: int) -> tuple[bytes, int]:
        """``(data, file_size)``; ``data`` is empty at or past the end."""
        path = self._resolve(rel)
        if not path.is_file():
            raise FileAccessError(f"no such file {rel!r:.80}")
        length = max(0, min(int(length), MAX_CHUNK))
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            return f.read(length), size

    def mark(self, prefix: str, files: dict[str, str], by: str) -> dict[str, Any]:
        """Record in ``<prefix>/_rigdeck_transferred.json`` the files (paths relative to the data folder ->
        SHA-256) that a console verified, keeping only those whose checksum on the rig still matches."""
        folder = self._resolve(prefix)
        if not folder.is_dir():
            raise FileAccessError(f"no session folder {prefix!r:.80} to mark")
        listed = {f["path"]: f["sha256"] for f in self.list_files(prefix)}
        marked = {}
        changed = []
        for path, digest in files.items():
            if listed.get(path) == digest:
                marked[PurePosixPath(path).relative_to(PurePosixPath(prefix)).as_posix()] = digest
            else:
                changed.append(path)
        target = folder / MARK_NAME
        record: dict[str, Any] = {"files": {}, "transfers": []}
        try:
            old = json.loads(target.read_text(encoding="utf-8"))
            if isinstance(old, dict) and isinstance(old.get("files"), dict):
                record["files"].update(old["files"])
                record["transfers"] = [t for t in old.get("transfers", []) if isinstance(t, dict)][-50:]
        except (OSError, ValueError):
            pass
        now = time.time()
        record["files"].update({rel: {"sha256": digest, "at": now} for rel, digest in marked.items()})
        record["transfers"].append({"by": str(by)[:200], "at": now, "files": len(marked)})
        tmp = target.with_name(f".{MARK_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, target)
        return {"marked": len(marked), "changed": changed}

    async def handle(self, key: str, value: dict[str, Any]) -> tuple[Any, bytes | None]:
        """Answer one FILES, FETCH or MARK request (off the event loop)."""
        if key == "MARK":
            prefix, files = value.get("prefix"), value.get("files")
            if not isinstance(prefix, str) or not prefix or not isinstance(files, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in files.items()) or len(files) > MAX_LISTED:
                raise FileAccessError("MARK needs a session folder prefix and {path: sha256}")
            for path in files:
                if not PurePosixPath(safe_relative(path)).is_relative_to(PurePosixPath(safe_relative(prefix))):
                    raise FileAccessError(f"{path!r:.80} is not in {prefix!r:.80}")
            return await in_worker(self.mark, prefix, files, str(value.get("by") or "")), None
        if key == "FILES":
            prefix = value.get("prefix") or ""
            if not isinstance(prefix, str):
                raise FileAccessError("prefix must be a string")
            return {"files": await in_worker(self.list_files, prefix, value.get("sha256", True) is not False)}, None
        path, offset, length = value.get("path"), value.get("offset", 0), value.get("length", DEFAULT_CHUNK)
        crc_chunk = value.get("crcs")
        for name, number in (("offset", offset), ("length", length), ("crcs", crc_chunk or 0)):
            if not is_int(number) or number < 0:
                raise FileAccessError(f"{name} must be a non-negative integer")
        if crc_chunk:
            crcs, size = await in_worker(self.chunk_crcs, path, offset, length, crc_chunk)
            return {"size": size, "offset": offset, "crcs": crcs}, None
        if not isinstance(path, str):
            raise FileAccessError("path must be a string")
        data, size = await self.read_served(path, offset, length)
        # (a console of an earlier version checks a CRC-32 with every chunk; this one asks for none)
        crc = None if value.get("crc", True) is False else await in_worker(zlib.crc32, data)
        return {"size": size, "offset": offset, "crc32": crc, "eof": offset + len(data) >= size}, data

    def chunk_crcs(self, rel: str, offset: int, length: int, chunk: int) -> tuple[list[int], int]:
        """CRC-32 of each ``chunk``-sized piece of ``[offset, offset + length)`` and the file's size: what a
        console compares with its copy to find the pieces that arrived damaged."""
        if not MIN_CRC_CHUNK <= chunk <= MAX_CHUNK or length > MAX_CRC_RANGE:
            raise FileAccessError(f"CRC pieces must be {MIN_CRC_CHUNK}..{MAX_CHUNK} bytes over at most "
                                  f"{MAX_CRC_RANGE} bytes")
        path = self._resolve(rel)
        if not path.is_file():
            raise FileAccessError(f"no such file {rel!r:.80}")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _crcs(f, offset, min(length, max(0, size - offset)), chunk), size


# ------------------------------------------------------------------------------------------ console side

async def list_files(request: Requester, prefix: str = "", hashes: bool = True) -> list[RemoteFile]:
    """The rig's files below ``prefix``; without ``hashes`` at once, with only the checksums the rig already
    knows (:func:`fetch_verified` asks for the others once each file is fetched)."""
    value, _ = await request("FILES", {"prefix": prefix} if hashes else {"prefix": prefix, "sha256": False})
    if not isinstance(value, dict) or not isinstance(value.get("files"), list):
        raise TransferError(f"unexpected FILES reply: {value!r:.80}")
    return [RemoteFile.from_wire(item) for item in value["files"]]


async def mark_transferred(request: Requester, prefix: str, files: list[RemoteFile], by: str) -> dict[str, Any]:
    """Tell the rig these files of session folder ``prefix`` are verified on the console's side."""
    value, _ = await request("MARK", {"prefix": prefix, "files": {f.path: f.sha256 for f in files}, "by": by})
    if not isinstance(value, dict) or not is_int(value.get("marked")):
        raise TransferError(f"unexpected MARK reply: {value!r:.80}")
    return value


#: file systems whose files take direct writes (local disks); anything else (NFS, SMB, tmpfs, FUSE...) is
#: written through the page cache as usual
DIRECT_FILESYSTEMS = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
#: writes of one file at once: one, in file order (two side by side measured slower here, median 422 vs 509
#: MB/s for 1 GiB, and a kill could leave a hole before the last chunk written)
WRITE_THREADS = 1
#: offset and length alignment of a direct write (a disk sector size that fits every common disk)
DIRECT_ALIGN = 4096


def filesystem_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on (Linux's mount table), None when unknown."""
    try:
        target = os.path.realpath(path)
        best, kind = "", None
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, fields[2]
        return kind
    except OSError:
        return None


def _copy(target: memoryview, source: memoryview) -> None:
    """``target[:] = source`` without holding the GIL for the copy when both expose their memory (a chunk in
    libzmq's buffer does): a megabyte copied while holding it stalled the event loop ~0.2 ms per chunk."""
    try:
        ctypes.memmove(ctypes.addressof(ctypes.c_char.from_buffer(target)),
                       ctypes.addressof(ctypes.c_char.from_buffer(source)), len(source))
    except TypeError:  # a read-only source (bytes): Python's own copy
        target[:] = source


class _PartWriter:
    """Appends chunks to a ``.part`` file and hashes them as they go, in two threads of its own.

    Why threads of its own rather than the shared pool: writes must land in file order, and the fetch must
    not wait for one before asking for the next chunks (waiting left the wire idle while each megabyte was
    written and hashed). Hashing (~0.7 ms a megabyte) and writing have a thread each: side by side neither
    waits for the other. :meth:`submit` returns at once.

    Why direct writes (``O_DIRECT``) on a local disk: a session's gigabytes would otherwise fill the
    console's page cache, and each new cached page costs more than the write itself (here: a 1 GiB write
    through the page cache ran at 270-330 MiB/s, direct at 1,060-1,230 MiB/s, both with the final fsync).
    A direct write needs aligned offsets, lengths and memory: each chunk is copied into an aligned buffer,
    the file's unaligned last bytes go through the page cache, and a file system that refuses direct writes
    gets ordinary ones.
    """

    def __init__(self, part: Path) -> None:
        self.hash = hashlib.sha256()
        self.part = part
        self.fd = os.open(part, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.dfd: int | None = None
        size = os.fstat(self.fd).st_size
        if hasattr(os, "O_DIRECT") and filesystem_type(part.parent) in DIRECT_FILESYSTEMS:
            try:
                self.dfd = os.open(part, os.O_WRONLY | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self.dfd = None
            else:  # resume at an aligned length (a few bytes fetched again)
                if size % DIRECT_ALIGN:
                    size -= size % DIRECT_ALIGN
                    os.ftruncate(self.fd, size)
        self.direct = self.dfd is not None
        #: where the next chunk submitted goes (the bytes already in the file when it was opened, then more)
        self.offset = size
        if size:
            with open(part, "rb") as f:
                while block := f.read(1024 * 1024):
                    self.hash.update(block)
        self._buffers: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._writer = concurrent.futures.ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="rigdeck-write")
        self._hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rigdeck-hash")

    def submit(self, data: bytes | memoryview) -> asyncio.Future[int]:
        """Write ``data`` at the end of what was submitted before it, and hash it in order; the future is done
        when both are, and gives the offset just past ``data`` (how much of the file is written)."""
        offset, self.offset = self.offset, self.offset + len(data)
        hashed = self._hasher.submit(self.hash.update, data)
        # one completion per chunk reaches the loop (the writer's, once the hash is done too): each wake-up of
        # the loop from a thread costs it more than the bookkeeping of the chunk itself
        return asyncio.wrap_future(self._writer.submit(self._write, data, offset, hashed))

    def _write(self, data: bytes | memoryview, offset: int,
               hashed: concurrent.futures.Future[None] | None = None) -> int:
        """(In the writer thread.) Write ``data`` at ``offset``; then wait for its hash; the end offset."""
        end = offset + len(data)
        self._write_at(memoryview(data).cast("B"), offset)
        if hashed is not None:
            hashed.result()
        return end

    def _write_at(self, view: memoryview, offset: int) -> None:
        if self.direct and offset % DIRECT_ALIGN == 0 and len(view) >= DIRECT_ALIGN:
            done = self._direct(view[:len(view) - len(view) % DIRECT_ALIGN], offset)
            view, offset = view[done:], offset + done
        while view:  # the rest (or everything) through the page cache
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def _direct(self, view: memoryview, offset: int) -> int:
        """Write ``view`` (an aligned length, at an aligned offset) directly; the bytes written (0 when the
        file system refused: every later write then goes through the page cache)."""
        try:
            buffer = self._buffers.get_nowait()
        except queue.Empty:
            buffer = None
        if buffer is None or len(buffer) < len(view):
            buffer = mmap.mmap(-1, len(view))  # page-aligned memory
        window = memoryview(buffer)[:len(view)]
        done = 0
        try:
            _copy(window, view)
            while done < len(view):
                written = os.pwrite(self.dfd, window[done:], offset + done)  # type: ignore[arg-type]
                done += written
                if not written or written % DIRECT_ALIGN:  # a short write: the rest through the page cache
                    break
        except OSError as ex:
            if ex.errno != errno.EINVAL or done:
                raise
            log.info("%s: direct writes refused (%s); writing through the page cache", self.part, ex)
            self.direct = False
        finally:
            window.release()
            self._buffers.put(buffer)
        return done

    def close(self, durable: bool = False) -> None:
        """(In a worker: the threads' queues are drained first.)"""
        self._writer.shutdown(wait=True)
        self._hasher.shutdown(wait=True)
        try:
            if durable:  # on disk (and out of the disk's cache) before it is called verified
                os.fsync(self.fd)
        finally:
            for fd in (self.fd, self.dfd):
                if fd is not None:
                    os.close(fd)
            while not self._buffers.empty():
                self._buffers.get_nowait().close()


async def fetch_file(request: Requester, remote: RemoteFile, dest: Path, progress: Progress | None = None,
                     chunk_size: int = DEFAULT_CHUNK, attempts: int = 3, chunk_retries: int = CHUNK_RETRIES,
                     window: int = DEFAULT_WINDOW, count: FetchCount | None = None) -> Path:
    """Fetch one file to ``dest`` (see the module docstring); returns ``dest``."""
    await fetch_verified(request, remote, dest, progress, chunk_size, attempts, chunk_retries, window, count)
    return dest


async def fetch_verified(request: Requester, remote: RemoteFile, dest: Path, progress: Progress | None = None,
                         chunk_size: int = DEFAULT_CHUNK, attempts: int = 3, chunk_retries: int = CHUNK_RETRIES,
                         window: int = DEFAULT_WINDOW, count: FetchCount | None = None) -> RemoteFile:
    """Fetch one file to ``dest``; returns the rig's file as verified (its SHA-256 known even when the
    listing was a quick one)."""
    count = count if count is not None else FetchCount()
    await in_worker(dest.parent.mkdir, parents=True, exist_ok=True)
    if dest.is_file() and dest.stat().st_size == remote.size:
        remote = remote if remote.sha256 else await _with_checksum(request, remote)
        if await in_worker(sha256_file, dest) == remote.sha256:
            count.present += remote.size
            if progress:
                progress(remote.path, remote.size, remote.size)
            return remote
    part = dest.with_name(dest.name + PART_SUFFIX)
    chunk_size = max(MIN_CRC_CHUNK, min(int(chunk_size), MAX_CHUNK))
    window = max(1, window)
    for attempt in range(1, attempts + 1):
        if part.is_file() and part.stat().st_size > remote.size:  # longer than the file: not a prefix of it
            part.unlink()
        writer = await in_worker(_PartWriter, part)
        complete = False
        try:
            count.resumed += writer.offset
            if progress and writer.offset:
                progress(remote.path, writer.offset, remote.size)
            await _fetch_into(request, remote, writer, progress, chunk_size, window, count)
            complete = True
        finally:
            await in_worker(writer.close, complete)
        remote = remote if remote.sha256 else await _with_checksum(request, remote)
        if writer.hash.hexdigest() == remote.sha256 or await _repair(request, remote, part, chunk_size,
                                                                     chunk_retries, window, count):
            os.replace(part, dest)  # same folder: never a cross-device rename
            return remote
        part.unlink()
        log.warning("%s: checksum mismatch after transfer (attempt %d/%d); fetching it again",
                    remote.path, attempt, attempts)
    raise TransferError(f"{remote.path}: checksum still wrong after {attempts} attempts")


async def _with_checksum(request: Requester, remote: RemoteFile) -> RemoteFile:
    """``remote`` from a quick listing, with the rig's SHA-256 of it: computed as the rig served it (or now,
    from its disk). A file that is not the one listed (other size or modification time) is the error."""
    again = [f for f in await list_files(request, remote.path) if f.path == remote.path]
    now = again[0] if again else RemoteFile(remote.path, -1, "(gone)", remote.mtime)
    if (now.size, now.mtime) != (remote.size, remote.mtime):
        raise TransferError(f"{remote.path}: changed on the rig after it was listed ({remote.size} bytes -> "
                            f"{now.size} bytes{', modified since' if now.size == remote.size else ''}); "
                            "list the files again")
    return now


async def _listed_again(request: Requester, remote: RemoteFile) -> RemoteFile | None:
    """The rig's listing of this one file now (None when it cannot say)."""
    try:
        again = await list_files(request, remote.path)
    except Exception as ex:  # noqa: BLE001 - only a hint for the error text
        log.info("%s: could not list it again: %s", remote.path, ex)
        return None
    same = [f for f in again if f.path == remote.path]
    return RemoteFile(same[0].path, same[0].size, same[0].sha256, remote.mtime) if same else \
        RemoteFile(remote.path, -1, "(gone)", remote.mtime)


async def _repair(request: Requester, remote: RemoteFile, part: Path, chunk_size: int, retries: int,
                  window: int, count: FetchCount) -> bool:
    """A complete ``.part`` whose SHA-256 is wrong: find the pieces that differ from the rig's file (CRC-32 of
    each piece on both sides) and fetch only those again, up to ``retries`` times in all; True when the
    whole file's SHA-256 is then right, False when no piece differs (the file is fetched again).

    Why here and not a CRC with every chunk: TCP checks every segment (and CURVE authenticates it), so a
    damaged chunk is rare, while a CRC of every megabyte on both ends cost a fifth of the throughput.
    """
    now = await _listed_again(request, remote)
    if now is not None and now != remote:
        raise TransferError(f"{remote.path}: changed on the rig after it was listed "
                            f"({remote.size} bytes, SHA-256 {remote.sha256[:12]}… -> {now.size} bytes, "
                            f"{now.sha256[:12]}…); list the files again")
    bad: list[int] = []
    for _ in range(1, retries):  # the whole file's fetch was the first try
        theirs = await _rig_crcs(request, remote, chunk_size)
        ours = await in_worker(_part_crcs, part, chunk_size)
        bad = [i * chunk_size for i, crc in enumerate(theirs) if i >= len(ours) or ours[i] != crc]
        if not bad:
            return False
        log.info("%s: %d damaged piece(s) from offset %d; asking for them again", remote.path, len(bad), bad[0])
        for start in range(0, len(bad), window):
            offsets = bad[start:start + window]
            chunks = await asyncio.gather(*(_fetch_chunk(request, remote, offset,
                                                         min(chunk_size, remote.size - offset))
                                            for offset in offsets))
            await in_worker(_patch, part, list(zip(offsets, chunks, strict=True)))
            count.fetched += sum(len(c) for c in chunks)
        if await in_worker(sha256_file, part) == remote.sha256:
            return True
    where = bad[0] if bad else 0
    raise TransferError(f"{remote.path}: chunk at offset {where} failed {retries} times "
                        f"(corrupted chunk at offset {where})")


async def _rig_crcs(request: Requester, remote: RemoteFile, chunk_size: int) -> list[int]:
    """The rig's CRC-32 of each ``chunk_size`` piece of the file, asked for range by range."""
    span = max(chunk_size, MAX_CRC_RANGE // chunk_size * chunk_size)
    out: list[int] = []
    for offset in range(0, remote.size, span):
        value, _ = await request("FETCH", {"path": remote.path, "offset": offset, "length": span,
                                           "crcs": chunk_size})
        crcs = value.get("crcs") if isinstance(value, dict) else None
        if not isinstance(crcs, list) or not all(is_int(c) for c in crcs):
            raise TransferError(f"{remote.path}: unexpected reply to a CRC request: {value!r:.80}")
        if value.get("size") != remote.size:
            raise TransferError(f"{remote.path}: changed on the rig after it was listed (size {remote.size} -> "
                                f"{value.get('size')}); list the files again")
        out.extend(crcs)
    return out


def _part_crcs(part: Path, chunk_size: int) -> list[int]:
    with open(part, "rb") as f:
        return _crcs(f, 0, os.fstat(f.fileno()).st_size, chunk_size)


def _patch(part: Path, chunks: list[tuple[int, bytes | memoryview]]) -> None:
    """Write pieces fetched again into place, on disk before the file is checked and called verified."""
    with open(part, "r+b") as f:
        for offset, data in chunks:
            f.seek(offset)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


async def _fetch_into(request: Requester, remote: RemoteFile, writer: _PartWriter, progress: Progress | None,
                      chunk_size: int, window: int, count: FetchCount) -> None:
    """Keep up to ``window`` chunk requests in flight and up to ``window`` chunks queued for the writer
    thread; the chunks are written in file order."""
    inflight: collections.deque[tuple[int, asyncio.Task[bytes | memoryview]]] = collections.deque()
    writes: collections.deque[asyncio.Future[int]] = collections.deque()
    next_offset = received = writer.offset
    try:
        while received < remote.size or writes:
            while len(inflight) < window and next_offset < remote.size:
                length = min(chunk_size, remote.size - next_offset)
                task = asyncio.ensure_future(_fetch_chunk(request, remote, next_offset, length))
                inflight.append((length, task))
                next_offset += length
            # report what is written, and keep the writer's queue (memory) bounded
            while writes and (writes[0].done() or len(writes) >= window or not inflight):
                written = await writes.popleft()  # (in order: everything before it is written too)
                if progress:
                    progress(remote.path, written, remote.size)
            if not inflight:
                continue
            length, task = inflight.popleft()
            data = await task
            if len(data) != length:
                raise TransferError(f"{remote.path}: the rig sent {len(data)} bytes at offset {received}, "
                                    f"not {length}; it changed on the rig after it was listed")
            writes.append(writer.submit(data))
            received += length
            count.fetched += length
    finally:
        for _, task in inflight:
            task.cancel()
        for future in [*(task for _, task in inflight), *writes]:
            try:
                await future
            except BaseException:  # noqa: BLE001 - already failing or cancelled: the first error is raised
                pass


async def _fetch_chunk(request: Requester, remote: RemoteFile, offset: int, length: int) -> bytes | memoryview:
    """One chunk (no CRC asked for: the whole file's SHA-256 checks it, :func:`_repair` finds a bad one)."""
    value, blob = await request("FETCH", {"path": remote.path, "offset": offset, "length": length, "crc": False})
    if not isinstance(value, dict) or value.get("offset") != offset:
        raise TransferError(f"{remote.path}: unexpected reply to the chunk at offset {offset}: {value!r:.60}")
    if value.get("size") != remote.size:
        raise TransferError(f"{remote.path}: changed on the rig after it was listed (size {remote.size} -> "
                            f"{value.get('size')}); list the files again")
    if not blob and offset < remote.size:
        raise TransferError(f"{remote.path}: the rig's file ended at {offset} of {remote.size} bytes")
    return blob or b""


async def fetch_files(request: Requester, dest_dir: str | os.PathLike[str], files: list[RemoteFile],
                      progress: Progress | None = None, chunk_size: int = DEFAULT_CHUNK,
                      attempts: int = 3, count: FetchCount | None = None) -> list[Path]:
    """Fetch ``files`` below ``dest_dir`` keeping their relative paths; returns the local paths."""
    root = Path(dest_dir)
    out = []
    for remote in files:
        dest = root.joinpath(*safe_relative(remote.path).parts)
        out.append(await fetch_file(request, remote, dest, progress, chunk_size, attempts, count=count))
    return out
