"""How much an asyncio transport reads per system call.

asyncio reads every datagram and every stream chunk into a fresh 256 KiB buffer. That is past malloc's mmap
threshold, so each read pays an mmap, page faults and an munmap: ~15 us per read here (perf shows
``clear_page`` and TLB flushes), against ~1.6 us for a 64 KiB buffer, for messages of a few dozen bytes.
Our transports read at most what a message can need per call.
"""

from __future__ import annotations

import asyncio

#: a stream read: plenty for our messages, which a parser puts together from several reads when larger
STREAM_READ = 65536


def read_at_most(transport: asyncio.BaseTransport | None, size: int = STREAM_READ) -> None:
    """Have ``transport`` read at most ``size`` bytes per socket read (no-op for transports without the knob)."""
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = size  # type: ignore[attr-defined]
