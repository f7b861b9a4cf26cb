"""A tcp:// client that writes and never reads must not grow the rig: a real ``rigdeck serve`` process stops
reading from it once what it owes that client backs up, so the client's own writes block, the rig's memory
(RSS, from /proc) stays within 100 MB of its idle size, and the rig keeps serving everyone else."""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from pathlib import Path

import pytest
from e2e import rig_status
from helpers import run
from rigprocs import rig_processes

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")

MB = 1024 * 1024
#: what the client offers to write: without backpressure the rig would take it all (and keep its echoes)
OFFER = 400 * MB
#: the client counts the rig as no longer reading once its writes have made no progress this long
STALLED = 2.0


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def write_until_stalled(port: int) -> tuple[socket.socket, int]:
    """Send EXPSTATUS messages carrying 60 kB each (every one is echoed back whole), never reading."""
    message = json.dumps([32, "x" * 60_000]).encode()
    chunk = message * 16
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    sent = 0
    view = memoryview(chunk)
    last_progress = time.monotonic()
    while sent < OFFER:
        _, writable, _ = select.select([], [sock], [], 0.1)
        if not writable:
            if time.monotonic() - last_progress > STALLED:
                break  # the rig stopped reading from us
            continue
        try:
            n = sock.send(view[sent % len(chunk):])
        except BlockingIOError:
            continue
        sent += n
        last_progress = time.monotonic()
    return sock, sent


def test_a_client_that_never_reads_cannot_grow_the_rig(tmp_path: Path) -> None:
    with rig_processes(tmp_path / "rigs", {"rig": {"uris": ["tcp://127.0.0.1:0"]}}) as cluster:
        spec = cluster.specs["rig"]
        pid = cluster.procs["rig"].pid
        assert run(rig_status(spec)) == 0
        idle = rss(pid)
        sock, sent = write_until_stalled(spec.address.port)
        try:
            grown = rss(pid) - idle
            assert sent < OFFER / 4, f"the rig read {sent / MB:.0f} MB from a client that never reads"
            assert grown < 100 * MB, f"the rig grew by {grown / MB:.0f} MB"
            assert run(rig_status(spec)) == 0  # another client is still served meanwhile
        finally:
            sock.close()
        assert run(rig_status(spec)) == 0
        assert rss(pid) - idle < 100 * MB
    print(f"client wrote {sent / MB:.1f} MB before blocking; rig RSS grew {grown / MB:.1f} MB", file=sys.stderr)
