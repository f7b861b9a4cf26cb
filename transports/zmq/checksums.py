"""The two checksums of session-file transfer, and one read of a file that computes both.

SHA-256 is the file's name for people and tools (``SHA256SUMS``, ``sha256sum -c``, the rig's marks);
XXH3-128 is what the console checks each copy with: both are as sure against damage in transit, and XXH3
runs ten times faster (see :mod:`transports.zmq.files` for why that matters).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import xxhash

#: bytes read at once when a file is hashed from disk
READ_BLOCK = 1024 * 1024


def new_check() -> Any:
    """A running XXH3-128 (``update``, ``hexdigest``), the checksum a copy is checked with."""
    return xxhash.xxh3_128()


def file_digests(path: Path, sha256: bool = True, check: bool = True) -> tuple[str, str]:
    """``(SHA-256, XXH3-128)`` of a file, read once ("" for one not asked for)."""
    hashes = [hashlib.sha256() if sha256 else None, new_check() if check else None]
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            for h in hashes:
                if h is not None:
                    h.update(block)
    return tuple(h.hexdigest() if h is not None else "" for h in hashes)  # type: ignore[return-value]
