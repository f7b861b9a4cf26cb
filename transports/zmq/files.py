"""Session-file transfer over ``zmq://``: list a rig's files, fetch them in checked, resumable chunks.

Rig side, :class:`FileStore`: serves files below the rig's data folder only (no absolute paths, no
``..``, no symlinks leading out), lists them with size and SHA-256, and reads chunks. Reading runs in a
worker thread so a large checksum never stalls heartbeats.

Console side, :func:`fetch_files`: each file is written to ``NAME.part`` next to its final place, one
chunk at a time; every chunk carries a CRC-32 (a corrupted chunk is asked for again), and the whole file
is checked against the SHA-256 from the listing before it is renamed into place. An interrupted transfer
resumes from the ``.part`` file's length; a ``.part`` that turns out corrupt is discarded and the file
fetched again (up to ``attempts`` times). A file already present with the right checksum is skipped.
Progress goes to ``progress(path, received_bytes, size_bytes)`` after every chunk.
(Autopilot sends a whole file as one base64 message and waits forever if it is lost.)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.checks import is_int

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 256 * 1024
MAX_CHUNK = 4 * 1024 * 1024
MAX_LISTED = 20000
PART_SUFFIX = ".part"

Progress = Callable[[str, int, int], None]
#: ``request(key, value) -> (reply_value, blob)``: one FILES/FETCH round trip through the link
Requester = Callable[[str, dict[str, Any]], Awaitable[tuple[Any, bytes | None]]]


class FileAccessError(ValueError):
    """A path the rig refuses to serve, or a file it cannot read (the text says which and why)."""


class TransferError(RuntimeError):
    """A file could not be fetched intact after every attempt."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative, POSIX separators
    size: int
    sha256: str
    mtime: float = 0.0

    @classmethod
    def from_wire(cls, item: Any) -> RemoteFile:
        if not isinstance(item, dict):
            raise TransferError(f"file listing entry is not an object: {item!r:.60}")
        path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
        if not isinstance(path, str) or not isinstance(size, int) or size < 0 or not isinstance(digest, str):
            raise TransferError(f"file listing entry malformed: {item!r:.80}")
        safe_relative(path)
        return cls(path, size, digest, float(item.get("mtime") or 0.0))


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


class FileStore:
    """The rig side: files below ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self._digests: dict[tuple[str, int, int], str] = {}

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

    def list_files(self, prefix: str = "") -> list[dict[str, Any]]:
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
            if path.name.endswith(PART_SUFFIX):
                continue
            stat = real.stat()
            out.append({"path": path.relative_to(self.root).as_posix(), "size": stat.st_size,
                        "mtime": stat.st_mtime, "sha256": self._digest(real, stat)})
            if len(out) > MAX_LISTED:
                raise FileAccessError(f"more than {MAX_LISTED} files under {prefix or 'the data folder'!r}; "
                                      "list a sub-folder")
        return out

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

    async def handle(self, key: str, value: dict[str, Any]) -> tuple[Any, bytes | None]:
        """Answer one FILES or FETCH request (off the event loop)."""
        if key == "FILES":
            prefix = value.get("prefix") or ""
            if not isinstance(prefix, str):
                raise FileAccessError("prefix must be a string")
            return {"files": await asyncio.to_thread(self.list_files, prefix)}, None
        path, offset, length = value.get("path"), value.get("offset", 0), value.get("length", DEFAULT_CHUNK)
        for name, number in (("offset", offset), ("length", length)):
            if not is_int(number) or number < 0:
                raise FileAccessError(f"{name} must be a non-negative integer")
        data, size = await asyncio.to_thread(self.read_chunk, path, offset, length)
        return {"size": size, "offset": offset, "crc32": zlib.crc32(data), "eof": offset + len(data) >= size}, data


# ------------------------------------------------------------------------------------------ console side

async def list_files(request: Requester, prefix: str = "") -> list[RemoteFile]:
    value, _ = await request("FILES", {"prefix": prefix})
    if not isinstance(value, dict) or not isinstance(value.get("files"), list):
        raise TransferError(f"unexpected FILES reply: {value!r:.80}")
    return [RemoteFile.from_wire(item) for item in value["files"]]


async def fetch_file(request: Requester, remote: RemoteFile, dest: Path, progress: Progress | None = None,
                     chunk_size: int = DEFAULT_CHUNK, attempts: int = 3, chunk_retries: int = 5) -> Path:
    """Fetch one file to ``dest`` (see the module docstring); returns ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and dest.stat().st_size == remote.size and await asyncio.to_thread(sha256_file, dest) \
            == remote.sha256:
        if progress:
            progress(remote.path, remote.size, remote.size)
        return dest
    part = dest.with_name(dest.name + PART_SUFFIX)
    chunk_size = max(1, min(int(chunk_size), MAX_CHUNK))
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.is_file() else 0
        if offset > remote.size:  # longer than the file: certainly not a prefix of it
            part.unlink()
            offset = 0
        with open(part, "ab") as out:
            while offset < remote.size:
                data = await _fetch_chunk(request, remote, offset, chunk_size, chunk_retries)
                out.write(data)
                offset += len(data)
                if progress:
                    progress(remote.path, offset, remote.size)
        if await asyncio.to_thread(sha256_file, part) == remote.sha256:
            os.replace(part, dest)
            return dest
        log.warning("%s: checksum mismatch after transfer (attempt %d/%d); fetching it again",
                    remote.path, attempt, attempts)
        part.unlink()
    raise TransferError(f"{remote.path}: checksum still wrong after {attempts} attempts")


async def _fetch_chunk(request: Requester, remote: RemoteFile, offset: int, length: int, retries: int) -> bytes:
    last = "no reply"
    for _ in range(retries):
        value, blob = await request("FETCH", {"path": remote.path, "offset": offset, "length": length})
        if not isinstance(value, dict):
            last = f"unexpected FETCH reply {value!r:.60}"
            continue
        if value.get("size") != remote.size:
            raise TransferError(f"{remote.path}: size changed on the rig ({remote.size} -> {value.get('size')}); "
                                "list the files again")
        blob = blob or b""
        if value.get("offset") != offset or zlib.crc32(blob) != value.get("crc32"):
            last = f"corrupted chunk at offset {offset}"
            log.info("%s: %s; asking again", remote.path, last)
            continue
        if not blob and offset < remote.size:
            raise TransferError(f"{remote.path}: the rig's file ended at {offset} of {remote.size} bytes")
        return blob
    raise TransferError(f"{remote.path}: chunk at offset {offset} failed {retries} times ({last})")


async def fetch_files(request: Requester, dest_dir: str | os.PathLike[str], files: list[RemoteFile],
                      progress: Progress | None = None, chunk_size: int = DEFAULT_CHUNK,
                      attempts: int = 3) -> list[Path]:
    """Fetch ``files`` below ``dest_dir`` keeping their relative paths; returns the local paths."""
    root = Path(dest_dir)
    out = []
    for remote in files:
        dest = root.joinpath(*safe_relative(remote.path).parts)
        out.append(await fetch_file(request, remote, dest, progress, chunk_size, attempts))
    return out
