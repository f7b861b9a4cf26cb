"""Process start-up limits: the soft open-file limit goes up to the hard one, and a process out of descriptors
writes a line about it, not a traceback per failed accept()."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

resource = pytest.importorskip("resource")

ROOT = Path(__file__).resolve().parents[2]

#: a server out of descriptors: 40 at most, every connection kept, no cap (asyncio.start_server itself)
SERVER = textwrap.dedent("""
    import asyncio, resource, sys
    from app.process_limits import limit_loop_errors
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
    held = []
    async def main():
        if sys.argv[1] == "limited":
            limit_loop_errors()
        server = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
""")


def out_of_descriptors(mode: str) -> str:
    """Run :data:`SERVER`, offer it 80 connections; its stderr up to the line saying it ran out."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, mode], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    socks = []
    err = ""
    try:
        assert proc.stdout is not None and proc.stderr is not None
        port = int(proc.stdout.readline())
        for _ in range(80):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
        deadline = time.monotonic() + 20
        while "Too many open files" not in err and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.2)
            if ready:
                err += proc.stderr.readline()
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        for sock in socks:
            sock.close()
    return err


def test_a_process_out_of_descriptors_writes_lines_not_tracebacks():
    err = out_of_descriptors("limited")
    assert "Too many open files" in err, err[-2000:]
    assert "Traceback" not in err, err[-2000:]  # (asyncio's own handler writes one before that line)
    assert len(err.splitlines()) == 1, err[-2000:]


def test_raise_open_file_limit_lifts_the_soft_limit_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 64:
        pytest.skip("hard open-file limit too low to lower the soft one below it")
    code = ("import resource; from app.process_limits import raise_open_file_limit;"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (32, resource.getrlimit(resource.RLIMIT_NOFILE)[1]));"
            "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    before_after, limits = out.strip().split(") (")
    assert before_after.startswith("(32, ")
    new_soft, new_hard = (int(x) for x in limits.rstrip(")").split(", "))
    assert new_soft == new_hard or new_hard == resource.RLIM_INFINITY


def test_freed_memory_is_kept_for_reuse_where_glibc_allows_it():
    # (its effect, 70,000 -> 2,200 page faults per GiB served, is measured by the transfer benchmark's rig)
    done = subprocess.run([sys.executable, "-c", "from app.process_limits import reuse_freed_memory as r; print(r())"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    import platform

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert done.stdout.strip() == str(expected)
