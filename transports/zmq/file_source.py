"""A rig's session files over ``zmq://``, as :class:`core.transfer.FileSource`: a link of its own per transfer.

Why not the session's link: file chunks of a megabyte would queue in front of the session's commands on
the same DEALER (and its heartbeats), so a transfer running while the next session starts would delay
that session's steps. A separate DEALER to the same rig (or to the rig's file endpoint, ``files:``) takes
commands only, no state stream, and resends a request only after a second (a chunk that takes a while to
read is not asked for ten times). ``max_rate`` (bytes/s) paces the chunks, so a transfer can leave room
on a shared network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from core.config import RigSpec
from core.protocol import parse_uri
from core.transfer import Fetched, MarkedFile
from transports.zmq import files as zmq_files
from transports.zmq.descriptor import DEFAULT_PORT
from transports.zmq.link import ZmqLink

#: a file link's options: no state stream, patient resends; a request fails after 10 s without a word from
#: the rig (one working on a long request, checksums of a big session, acknowledges it every 2 s meanwhile)
FILE_LINK_OPTIONS: dict[str, Any] = {"stream": False, "timeout": 10.0, "retry_initial": 1.0, "retry_max": 4.0}
#: seconds a rig gets to answer at all before its transfer fails as unreachable (a listing may take longer)
CONNECT_TIMEOUT = 5.0
#: options of the rig's own zmq:// entry that a file link to that same rig keeps (CURVE, liveness)
KEPT_OPTIONS = ("server_key", "client_key", "heartbeat", "liveness", "hwm")


class ZmqFileSource:
    """See the module docstring."""

    def __init__(self, name: str, uri: str, spec: RigSpec | None = None, max_rate: float | None = None,
                 chunk_size: int = zmq_files.DEFAULT_CHUNK, window: int = zmq_files.DEFAULT_WINDOW) -> None:
        address = parse_uri(uri, resolve_host=False, default_port=DEFAULT_PORT)
        options = dict(FILE_LINK_OPTIONS)
        if spec is not None and spec.uri == str(address):
            options.update({k: v for k, v in spec.options.items() if k in KEPT_OPTIONS})
        source = spec.source if spec is not None else None
        self.link = ZmqLink(RigSpec(f"{name} files", dataclasses.replace(address, scheme="zmq"), options=options,
                                    source=source), blobs_by_reference=True)
        self.max_rate = max_rate
        self.chunk_size = chunk_size
        self.window = window
        self._paced_until = time.monotonic()
        self._reached = False

    async def _request(self, key: str, value: dict[str, Any]) -> tuple[Any, bytes | None]:
        if not self._reached:
            await self.link.connect()
            await self.link._wait_ready(time.monotonic() + CONNECT_TIMEOUT)
            self._reached = True
        reply = await self.link._file_request(key, value)
        if self.max_rate and key == "FETCH" and reply[1]:
            now = time.monotonic()
            self._paced_until = max(self._paced_until, now) + len(reply[1]) / self.max_rate
            await asyncio.sleep(max(0.0, self._paced_until - now))
        return reply

    async def list_files(self, prefix: str, hashes: bool = True) -> list[zmq_files.RemoteFile]:
        return await zmq_files.list_files(self._request, prefix, hashes)

    async def fetch_file(self, remote: zmq_files.RemoteFile, dest: Path, progress: zmq_files.Progress) -> Fetched:
        count = zmq_files.FetchCount()
        verified = await zmq_files.fetch_verified(self._request, remote, dest, progress, self.chunk_size,
                                                  window=1 if self.max_rate else self.window, count=count)
        return Fetched(count.fetched, verified)

    def partial_bytes(self, dest: Path) -> int:
        """Bytes of ``dest`` already fetched by an interrupted transfer (what a resume starts from)."""
        return zmq_files.partial_bytes(dest)

    async def mark_transferred(self, prefix: str, files: list[MarkedFile]) -> None:
        await zmq_files.mark_transferred(self._request, prefix, files, self.link.sender.split("#")[0])

    @property
    def last_heard(self) -> float | None:
        """``time.monotonic()`` of the rig's last word on this link (a reply, an ACK of long work, a
        heartbeat); None before the first."""
        return self.link._last_heard or None

    async def close(self) -> None:
        await self.link.close()
