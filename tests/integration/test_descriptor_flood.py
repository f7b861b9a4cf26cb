"""A real ``rigdeck serve`` with a low open-file limit (256, soft = hard, so start-up cannot raise it) is
flooded with idle connections on every stream listener it has: a session still runs end to end, its
recordings are written, and its stderr stays a few lines (it once filled with tens of thousands of
tracebacks while EXPSTART failed with "Too many open files")."""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from pathlib import Path

import pytest
import yaml
from e2e import check_recordings, run_cli
from rigprocs import RigCluster

from app.demo_rigs import RigProcess

resource = pytest.importorskip("resource")

#: the rig's open-file limit, soft and hard: far below what the flood offers
NOFILE = 256
#: idle connections offered to each listener (5 listeners: 5 x 150 = 750, three times the rig's limit)
FLOOD = 150
#: what "a few lines" of stderr means here; the flood used to write megabytes
STDERR_BUDGET = 16 * 1024


def low_open_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def flood(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` connections to ``port`` that never send a byte (non-blocking: a listener that stopped
    accepting must not stall the test) and wait until each has connected, failed or been closed."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        assert code in (0, errno.EINPROGRESS), os.strerror(code)
        socks.append(sock)
    pending = list(socks)
    deadline = time.monotonic() + 20
    while pending and time.monotonic() < deadline:
        _, done, _ = select.select([], pending, [], 0.2)
        pending = [s for s in pending if s not in done]
    return socks


def test_a_flooded_rig_still_records_a_whole_session(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 5 * FLOOD + 200 and hard >= 5 * FLOOD + 200:  # the flood needs descriptors of its own
        resource.setrlimit(resource.RLIMIT_NOFILE, (5 * FLOOD + 200, hard))
    rig_file = tmp_path / "sync.rig.yaml"
    body = {
        "main_sync": True,
        "uris": ["udp://127.0.0.1:0", "tcp://127.0.0.1:0", "rpc://127.0.0.1:0", "sio://127.0.0.1:0",
                 "zmq://127.0.0.1:0"],
        "drivers": {"recorders": {"nidq": {"kind": "ephys", "rate": 500}, "left": {"kind": "camera", "rate": 50}},
                    "manipulator": {"ids": ["1"]}},
    }
    rig_file.write_text(yaml.safe_dump({"name": "sync", **body}), encoding="utf-8")
    log_path = tmp_path / "sync.log"
    data_dir = tmp_path / "rigs" / "sync"
    proc = RigProcess("sync", rig_file, data_dir, log_path, preexec=low_open_file_limit)
    socks: list[socket.socket] = []
    try:
        uris = proc.wait_ready()
        notifier = next(line.split()[3] for line in proc.lines if line.startswith("NOTIFIER "))
        ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in uris[1:]] + [int(notifier.rsplit(":", 1)[1])]
        for port in ports:  # tcp, pc_rpc, Socket.IO, zmq, sync_struct
            socks += flood(port, FLOOD)
        rigs_file = tmp_path / "remote_rigs.yaml"
        rigs_file.write_text(yaml.safe_dump({"sync": {"uri": uris[0], "role": "main_sync"}}), encoding="utf-8")
        code, summary, stderr = run_cli("--rigs", str(rigs_file), "--subject", "FLOOD", "--duration", "1",
                                        "--poll", "0.2", "--data-dir", str(tmp_path / "console"))
        assert code == 0 and summary["ok"], (summary, stderr[-2000:], log_path.read_text()[-2000:])
        cluster = RigCluster({"sync": proc}, rigs_file, {"sync": data_dir}, {"sync": body})
        check_recordings(cluster, "sync", summary["exp_ref"])
    finally:
        for sock in socks:
            sock.close()
        proc.stop()
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert len(text.encode()) < STDERR_BUDGET, f"{len(text)} bytes of stderr: {text[-3000:]}"
    assert "max_connections" in text  # the cap was hit, and said so
