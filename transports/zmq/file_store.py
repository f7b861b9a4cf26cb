"""The rig's side of session-file transfer over ``zmq://``: :class:`FileStore` answers ``FILES``, ``FETCH``
and ``MARK`` (see :mod:`transports.zmq.files` for the console's side and the whole story).

It serves files below the rig's data folder only (no absolute paths, no ``..``, no symlinks leading out),
lists them with size, SHA-256 and XXH3-128 (see :mod:`transports.zmq.checksums`), and reads chunks.
Reading and hashing run in worker threads so a large checksum never stalls heartbeats. A file fetched in
order from its start is hashed from the very bytes served (:class:`_Serving`), so a console can list
quickly (``"sha256": false``: only checksums already known) and ask for each file's checksums once it has
it: the first bytes move at once instead of after a whole session was read and hashed, and the rig reads
each file once, not twice.

Marks: after the console verified a rig's files it sends ``MARK``; the rig writes (atomically) or extends
``_rigdeck_transferred.json`` in the session folder with each file's SHA-256 as it is *now* on the rig,
so a file changed later is never taken for transferred. The rig never deletes anything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import threading
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from core.checks import is_int
from core.workers import in_worker
from transports.zmq.checksums import file_digests, new_check
from transports.zmq.files import (
    DEFAULT_CHUNK,
    MARK_NAME,
    MAX_CHUNK,
    MAX_CRC_RANGE,
    MAX_LISTED,
    MIN_CRC_CHUNK,
    PART_SUFFIX,
    FileAccessError,
    piece_crcs,
    safe_relative,
)


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file is still the one whose bytes were hashed (replaced, grown or rewritten: not)."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


#: files hashed at once for a listing
HASH_THREADS = min(4, os.cpu_count() or 1)
#: files up to this size get their checksum in a quick listing (hashing one costs less than asking again)
QUICK_HASH_MAX = 1024 * 1024


#: a file's checksums, ``(SHA-256, XXH3-128)``, by ``(path, size, mtime_ns)``
Digests = dict[tuple[str, int, int], tuple[str, str]]


class _Serving:
    """One file being served: its chunks read in request order by a thread of its own, and its checksums
    computed from the very bytes sent, as long as they come in order from the start.

    Why: a console fetching a session asks for each file's chunks in order, so the rig can hash what it
    sends instead of reading every file once more for the listing's checksum before the first byte moves
    (a cold 1 GiB listing took 0.5 s here, and on a rig whose files are no longer in memory it reads the
    whole session from disk twice). Chunks asked for out of order (a repair, a resumed file) are served
    all the same; the file's checksum is then computed from disk when asked for.
    """

    def __init__(self, path: Path, digests: Digests) -> None:
        self.path = path
        self.digests = digests
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.identity = _identity(os.fstat(self.file.fileno()))
        self.hash: Any = hashlib.sha256()
        self.check: Any = new_check()
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
            self.check.update(data)
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
            self.digests[(str(self.path), stat.st_size, stat.st_mtime_ns)] = (self.hash.hexdigest(),
                                                                              self.check.hexdigest())
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
        self._digests: Digests = {}
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

    def _digest(self, path: Path, stat: os.stat_result) -> tuple[str, str]:
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            if len(self._digests) > 4 * MAX_LISTED:
                self._digests.clear()
            self._digests[key] = file_digests(path)
        return self._digests[key]

    def list_files(self, prefix: str = "", hashes: bool = True) -> list[dict[str, Any]]:
        """The files below ``prefix``: path, size, mtime, SHA-256 and XXH3-128. With ``hashes`` false, a big
        file's checksums are given only when already known (a file served whole since it last changed, or listed
        before), else ``None``: the listing is quick, and a console asks for that file's checksum once it has
        fetched it (computed as it was served). Small files are hashed at once: asking for each one's
        checksum afterwards would cost a round trip per file (thousands, for a folder of images)."""
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
        if not hashes:  # big files: their checksum only if already known (small ones are hashed below)
            for item in out:
                if item["size"] > QUICK_HASH_MAX:
                    real, stat = item.pop("real"), item.pop("stat")
                    item["sha256"], item["xxh128"] = self._digests.get((str(real), stat.st_size, stat.st_mtime_ns),
                                                                       (None, None))
        todo = [item for item in out if "real" in item]
        # checksums of a session's big files side by side: hashlib lets go of the GIL, so a rig PC's cores
        # share a cold listing (the console waits for it before the first byte moves)
        with concurrent.futures.ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="rigdeck-hash") as pool:
            digests = list(pool.map(lambda item: self._digest(item.pop("real"), item.pop("stat")), todo))
        for item, (sha256, check) in zip(todo, digests, strict=True):
            item["sha256"], item["xxh128"] = sha256, check
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
            return piece_crcs(f, offset, min(length, max(0, size - offset)), chunk), size
