"""Session-file transfer over ``zmq://``: what both ends share (limits, names, :class:`RemoteFile`, path
rules) and the console's side: list a rig's files, fetch them in checked, resumable chunks. The rig's side
is :mod:`transports.zmq.file_store`; the ``.part`` writer is :mod:`transports.zmq.part_writer`.

Console side, :func:`fetch_files`: each file is written to ``NAME.part`` next to its final place and checked
against the rig's checksum (from the listing, or asked for once the file is fetched: a file whose size or
modification time is then not the listed one is "changed on the rig after it was listed") before it is
renamed into place. A file whose checksum is wrong is listed again on its own: if the rig's copy changed
since the listing, that is the error; otherwise the pieces that
differ are found by comparing CRC-32s of every piece on both sides, and only those are fetched again (up to
``chunk_retries`` times in all). An interrupted transfer resumes from the ``.part`` file's length (a ``.part``
that is not a prefix of the file is mended the same way). A file already present with the right checksum is
skipped. Progress goes to ``progress(path, written_bytes, size_bytes)`` as chunks are written.
(Autopilot sends a whole file as one base64 message and waits forever if it is lost.)

Speed (see the README's transfer benchmark): up to ``window`` chunk requests are in flight at once and up to
``window`` chunks wait for the file's :class:`~transports.zmq.part_writer.PartWriter`, which writes and
hashes them in order while the next ones arrive (directly to a local disk); megabyte chunks stay in
libzmq's buffers on both ends (sent and received by reference, never copied by Python); the checksum is
computed as the chunks arrive instead of re-reading the file. No CRC travels with each chunk: TCP checks
every segment (CURVE authenticates it), and a CRC of every megabyte on both ends cost a fifth of the
throughput; the whole-file checksum catches what TCP would miss and the piece-wise CRCs find it.

Two checksums, two jobs. The rig gives each file's SHA-256 (what ``SHA256SUMS`` records and ``MARK``
compares) and its XXH3-128, computed from the same bytes it serves. The console checks what it received with
XXH3-128 (the checksum rsync checks transfers with since 3.2), not with a SHA-256 of its own: XXH3 runs at
~16 GB/s a core against SHA-256's ~1.5, and with both ends on one PC the console's SHA-256 was a fifth of the
transfer's CPU time. Both are as sure against damage in transit; neither stops a forger, which only CURVE
does. Bytes that match the rig's XXH3-128 are the rig's bytes, so the rig's SHA-256 is theirs, and
``sha256sum -c`` checks it on the destination. A rig that gives no XXH3-128 (an earlier RigDeck) is checked
with a SHA-256 of the fetched file.

Durability: a complete file is fsync'ed before it is renamed into place, so "verified" (and the rig's mark)
never stands for bytes still in the page cache that a power cut would lose.

Marks: after the console verified a rig's files it sends ``MARK`` (:func:`mark_transferred`); the rig
records them (see :mod:`transports.zmq.file_store`) and never deletes anything.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.checks import is_int, is_number
from core.workers import in_worker
from transports.zmq.checksums import file_digests
from transports.zmq.part_writer import PartWriter

log = logging.getLogger(__name__)

#: bytes asked for per chunk: 2 MiB halves the event loop's work per byte against 1 MiB (1 GiB on loopback,
#: nine runs each: 1.53-2.13 s against 1.79-2.19 s); 4 MiB was no faster and raised the loop's lag p99 to 5-6 ms
DEFAULT_CHUNK = 2 * 1024 * 1024
MAX_CHUNK = 4 * 1024 * 1024
#: chunk requests in flight at once per file (6 x 2 MiB keeps loopback busy; fewer left it idle at times)
DEFAULT_WINDOW = 6
#: times one chunk is asked for again when it arrives damaged (free when nothing is damaged; with chunks in
#: flight side by side a run of bad luck on one chunk must not end the transfer)
CHUNK_RETRIES = 8
MAX_LISTED = 20000
#: a console asks for per-piece CRC-32s of at most this much of a file at once (a read of ~0.2 s)
MAX_CRC_RANGE = 256 * 1024 * 1024
MIN_CRC_CHUNK = 4096
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
    #: the rig's XXH3-128 of the file, what the console checks its copy with ("" when not known yet, or
    #: from a rig that gives none: the copy is then checked with its SHA-256)
    xxh128: str = ""

    @classmethod
    def from_wire(cls, item: Any) -> RemoteFile:
        if not isinstance(item, dict):
            raise TransferError(f"file listing entry is not an object: {item!r:.60}")
        path, size, digest, mtime = item.get("path"), item.get("size"), item.get("sha256"), item.get("mtime")
        check = item.get("xxh128")
        if not isinstance(path, str) or not is_int(size) or size < 0 or not isinstance(digest, str | None) \
                or not isinstance(check, str | None) or not (mtime is None or is_number(mtime)):
            raise TransferError(f"file listing entry malformed: {item!r:.80}")
        safe_relative(path)
        return cls(path, size, digest or "", float(mtime or 0.0), check or "")

    @property
    def checked(self) -> bool:
        """Whether the rig's checksums are known (after a quick listing: only once it was asked again)."""
        return bool(self.sha256)

    def matches(self, check: str, sha256: str = "") -> bool:
        """Whether a copy with this XXH3-128 (or, from a rig that gives none, this SHA-256) is this file."""
        return check == self.xxh128 if self.xxh128 else bool(sha256) and sha256 == self.sha256


def safe_relative(path: str) -> PurePosixPath:
    """A relative path with no ``..``, no drive, no absolute root; FileAccessError otherwise."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise FileAccessError(f"bad file path {path!r:.80}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or ":" in pure.parts[0]:
        raise FileAccessError(f"path {path!r:.80} must be relative to the session folder, without '..'")
    return pure


def copy_matches(path: Path, remote: RemoteFile) -> bool:
    """Whether the local file ``path`` is the rig's ``remote`` (its checksums known), checked with XXH3-128
    when the rig gave one, else with SHA-256."""
    sha256, check = file_digests(path, sha256=not remote.xxh128, check=bool(remote.xxh128))
    return remote.matches(check, sha256)


def piece_crcs(f: Any, offset: int, length: int, chunk: int) -> list[int]:
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


# ------------------------------------------------------------------------------------------ console side

async def list_files(request: Requester, prefix: str = "", hashes: bool = True) -> list[RemoteFile]:
    """The rig's files below ``prefix``; without ``hashes`` at once, with only the checksums the rig already
    knows (:func:`fetch_verified` asks for the others once each file is fetched)."""
    value, _ = await request("FILES", {"prefix": prefix} if hashes else {"prefix": prefix, "sha256": False})
    if not isinstance(value, dict) or not isinstance(value.get("files"), list):
        raise TransferError(f"unexpected FILES reply: {value!r:.80}")
    return [RemoteFile.from_wire(item) for item in value["files"]]


async def mark_transferred(request: Requester, prefix: str, files: list[Any], by: str) -> dict[str, Any]:
    """Tell the rig these files (objects with ``path`` and ``sha256``) of session folder ``prefix`` are verified on
    the console's side."""
    value, _ = await request("MARK", {"prefix": prefix, "files": {f.path: f.sha256 for f in files}, "by": by})
    if not isinstance(value, dict) or not is_int(value.get("marked")):
        raise TransferError(f"unexpected MARK reply: {value!r:.80}")
    return value


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
        remote = remote if remote.checked else await _with_checksum(request, remote)
        if await in_worker(copy_matches, dest, remote):
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
        writer = await in_worker(PartWriter, part)
        complete = False
        try:
            count.resumed += writer.offset
            if progress and writer.offset:
                progress(remote.path, writer.offset, remote.size)
            await _fetch_into(request, remote, writer, progress, chunk_size, window, count)
            complete = True
        finally:
            await in_worker(writer.close, complete)
        remote = remote if remote.checked else await _with_checksum(request, remote)
        received = remote.matches(writer.hash.hexdigest()) if remote.xxh128 else await in_worker(
            copy_matches, part, remote)
        if received or await _repair(request, remote, part, chunk_size,
                                                                     chunk_retries, window, count):
            os.replace(part, dest)  # same folder: never a cross-device rename
            return remote
        part.unlink()
        log.warning("%s: checksum mismatch after transfer (attempt %d/%d); fetching it again",
                    remote.path, attempt, attempts)
    raise TransferError(f"{remote.path}: checksum still wrong after {attempts} attempts")


def partial_bytes(dest: Path) -> int:
    """Bytes of ``dest`` an interrupted fetch left in its ``.part`` file (0 when there is none)."""
    try:
        return dest.with_name(dest.name + PART_SUFFIX).stat().st_size
    except OSError:
        return 0


async def _with_checksum(request: Requester, remote: RemoteFile) -> RemoteFile:
    """The rig's listing of ``remote`` now, with its checksums (computed as the rig served it, or now from its
    disk). A file that is not the one listed (other size, modification time or, when the listing gave one,
    checksum) is the error."""
    again = [f for f in await list_files(request, remote.path) if f.path == remote.path]
    now = again[0] if again else RemoteFile(remote.path, -1, "(gone)", remote.mtime)
    if (now.size, now.mtime) != (remote.size, remote.mtime) or remote.sha256 not in ("", now.sha256) \
            or remote.xxh128 not in ("", now.xxh128):
        if now.size != remote.size:
            change = f"{remote.size} bytes -> {now.size} bytes"
        elif now.mtime != remote.mtime:
            change = "modified since"
        else:
            change = f"SHA-256 {remote.sha256[:12]}… -> {now.sha256[:12]}…"
        raise TransferError(f"{remote.path}: changed on the rig after it was listed ({change}); "
                            "list the files again")
    return now


async def _repair(request: Requester, remote: RemoteFile, part: Path, chunk_size: int, retries: int,
                  window: int, count: FetchCount) -> bool:
    """A complete ``.part`` whose checksum is wrong: find the pieces that differ from the rig's file (CRC-32 of
    each piece on both sides) and fetch only those again, up to ``retries`` times in all; True when the
    whole file's checksum is then right, False when no piece differs (the file is fetched again).

    Why here and not a CRC with every chunk: TCP checks every segment (and CURVE authenticates it), so a
    damaged chunk is rare, while a CRC of every megabyte on both ends cost a fifth of the throughput.
    """
    await _with_checksum(request, remote)  # a file changed on the rig is the error, not something to mend
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
        if await in_worker(copy_matches, part, remote):
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
        return piece_crcs(f, 0, os.fstat(f.fileno()).st_size, chunk_size)


def _patch(part: Path, chunks: list[tuple[int, bytes | memoryview]]) -> None:
    """Write pieces fetched again into place, on disk before the file is checked and called verified."""
    with open(part, "r+b") as f:
        for offset, data in chunks:
            f.seek(offset)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


async def _fetch_into(request: Requester, remote: RemoteFile, writer: PartWriter, progress: Progress | None,
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
