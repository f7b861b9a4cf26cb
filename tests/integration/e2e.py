"""Helpers for the end-to-end tests: a console engine over real links, the CLI as a subprocess, polling.

Waiting is done with ``helpers.wait_until`` (a condition polled against a deadline, never a bare sleep),
because these tests share two cores with other test runs and must not depend on how fast a process
gets scheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from rigprocs import RigCluster

from app.rigset import RigSet
from core.config import RigSpec
from core.journal import read_journal
from core.link import RigError
from core.protocol import ExpMessage, ExpStatus
from core.session import Session

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def console(specs: Mapping[str, RigSpec], data_dir: Path, **kwargs: Any) -> AsyncIterator[Session]:
    """A session engine over real links to ``specs`` (what ``rigdeck run`` builds), closed on exit."""
    rigset = RigSet(specs, poll_interval=kwargs.pop("poll_interval", None))
    links = await rigset.open()
    session = Session(links, rigset.specs, data_dir=data_dir, monitor=rigset.monitor, **kwargs)
    await session.open()
    try:
        yield session
    finally:
        await session.close()
        await rigset.close()


async def rig_status(spec: RigSpec, timeout: float = 2.0) -> int | None:
    """Ask one rig for its ExpStatus over a fresh link (None when it does not answer)."""
    rigset = RigSet({spec.name: spec})
    links = await rigset.open()
    try:
        reply = await links[spec.name].request(ExpMessage.EXPSTATUS, int(ExpStatus.CONNECTED), timeout=timeout)
        return int(reply[0])
    except RigError:
        return None
    finally:
        await rigset.close()


async def reset_rigs(specs: Mapping[str, RigSpec]) -> None:
    """Put rigs back to CONNECTED whatever a test left them in: EXPINTERRUPT, then EXPCLEANUP.

    The shared rigs serve several tests; this makes each test start from the state a fresh rig has.
    """
    rigset = RigSet(dict(specs))
    links = await rigset.open()
    record = {"error": "TestReset", "message": "reset between tests", "traceback": None}

    async def reset(name: str) -> None:
        with contextlib.suppress(RigError):
            await links[name].request(ExpMessage.EXPINTERRUPT, record, timeout=5)
        await links[name].request(ExpMessage.EXPCLEANUP, None, timeout=5)

    try:
        await asyncio.gather(*(reset(name) for name in links))
    finally:
        await rigset.close()


def journal(path: Path | str) -> list[dict[str, Any]]:
    """The records of a session journal; fails the test if a line is torn or garbled."""
    read = read_journal(path)
    assert not read.problems, read.problems
    return read.records


def kinds(records: list[dict[str, Any]], kind: str, **match: Any) -> list[dict[str, Any]]:
    """Records of ``kind`` whose fields equal ``match``."""
    return [r for r in records if r.get("kind") == kind and all(r.get(k) == v for k, v in match.items())]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", "run", *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_cli(*args: str, merge_stderr: bool = True) -> subprocess.Popen[str]:
    """``rigdeck run ...`` as a running subprocess (stdout piped; stderr into it unless ``merge_stderr=False``)."""
    return subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, cwd=ROOT, env=cli_env())


class LineReader:
    """Read a subprocess's stream on a thread, so a test can wait for a line with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def seen(self, text: str) -> bool:
        """Whether a line read so far starts with ``text`` (a poll condition)."""
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return any(line.startswith(text) for line in self.lines)

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Every line up to the end of the stream (the process has exited)."""
        self._thread.join(timeout)
        self.seen("")
        return self.lines


def run_cli(*args: str, timeout: float = 40.0) -> tuple[int, dict[str, Any], str]:
    """``rigdeck run ... --json`` as a subprocess: (exit code, the JSON summary, stderr)."""
    proc = subprocess.run(cli_command(*args, "--json"), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=cli_env(), stdin=subprocess.DEVNULL)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, f"expected one JSON line, got stdout={proc.stdout!r} stderr={proc.stderr[-2000:]!r}"
    return proc.returncode, json.loads(lines[0]), proc.stderr


def check_recordings(cluster: RigCluster, name: str, exp_ref: str, allow_empty: bool = False) -> dict[str, dict]:
    """Every recorder file of ``name`` for ``exp_ref`` is complete, self-consistent and matches its span.

    ``allow_empty``: a rig interrupted right after it started may have closed its file before a frame.
    """
    files = cluster.recordings(name, exp_ref)
    headers: dict[str, dict] = {}
    for path, (frames, info) in files.items():
        header, footer = info["header"], info["footer"]
        assert info["complete"] and info["warning"] is None, (path, info["warning"])
        assert header["exp_ref"] == exp_ref
        assert frames or allow_empty, path
        assert [f.index for f in frames] == list(range(len(frames))), path
        assert footer["frames"] == len(frames) and footer["error"] is None
        # frames follow the rig's clock from t0 to the stop (0.25 s of slack: the footer's time is taken after
        # the last write, which a loaded machine may delay)
        span = footer["stopped_at"] - header["t0"]
        assert abs(len(frames) - span * header["rate"]) <= header["rate"] * 0.25 + 2, (path, len(frames), span)
        headers[header["name"]] = {**header, "stopped_at": footer["stopped_at"], "frames": len(frames)}
    assert set(headers) == cluster.recorder_names(name), (name, sorted(files))
    return headers


def recording_started(cluster: RigCluster, names: list[str], exp_ref: str) -> bool:
    """Every recorder of these rigs has reached its file (at least one chunk): a poll condition."""
    for name in names:
        try:
            files = cluster.recordings(name, exp_ref)
        except ValueError:  # a file so new its header is not written yet
            return False
        if len(files) < len(cluster.recorder_names(name)) or not all(info["chunks"] for _, info in files.values()):
            return False
    return True
