"""Session transfers in the background: the one place the CLI, the console and the Data panel start them.

Qt-free (the window's Data panel is a thin view over :class:`TransferManager`). Why a manager rather
than a call at the end of a session: the transfer of session N must go on while session N+1 is prepared
and run, survive the operator's Retry, and be found again after a restart (:meth:`TransferManager.pending`).
Sessions are transferred one after another (their rigs side by side); each runs as its own task, so
nothing a session does ever waits on a transfer, and a failed rig is one Retry away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.report_html import save_report_quietly
from core.config import RigSpec
from core.listeners import Listeners, Unsubscribe
from core.transfer import (
    HEARD_WITHIN,
    STALLED_AFTER,
    FileSource,
    PendingSession,
    RigTransfer,
    SessionTransfer,
    pending_sessions,
    plan_session,
    run_session,
    session_rigs,
)
from core.workers import in_worker

log = logging.getLogger(__name__)

#: sessions of the last this many days are looked at for pending transfers at start-up
PENDING_DAYS = 30


def human_bytes(n: float) -> str:
    """``"1.2 GB"``: sizes as an operator reads them (decimal units, like file managers and disks)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


#: a rig's transfer state in the operator's words
STATE_WORDS = {"waiting": "waiting", "listing": "listing files…", "fetching": "copying", "verified": "verified",
               "failed": "failed", "skipped": "no transfer"}


@dataclass(frozen=True)
class TransferRow:
    """One rig of one session as the Data panel shows it (all text but the percentage)."""

    exp_ref: str
    rig: str
    state: str
    percent: int
    bytes: str
    rate: str
    eta: str
    verified: bool
    error: str


def transfer_row(exp_ref: str, rig: RigTransfer, now: float | None = None) -> TransferRow:
    total, done = rig.total_bytes, rig.done_bytes
    percent = 100 if rig.verified else (int(100 * done / total) if total else 0)
    rate, stalled = rig.rate(now), rig.stalled_for(now)
    state = STATE_WORDS.get(rig.state, rig.state)
    if stalled > STALLED_AFTER:  # never a last rate that looks live: say why nothing has come for a while
        if rig.busy(now):
            state = f"waiting for checksums (the rig answers), no data for {human_duration(stalled)}"
        else:
            state = f"stalled: nothing from the rig for {human_duration(stalled)}"
    elif rig.state == "listing" and rig.quiet_for(now) > HEARD_WITHIN:  # a rig gone while it listed
        state = f"stalled while listing files: nothing from the rig for {human_duration(rig.quiet_for(now))}"
    return TransferRow(
        exp_ref, rig.name, state, percent,
        "" if rig.skipped else f"{human_bytes(done)} of {human_bytes(total)}" if total else "",
        f"{human_bytes(rate)}/s" if rate > 0 else "", human_duration(rig.eta(now)),
        rig.verified, rig.skipped or rig.error or "")


def session_words(job: SessionTransfer, running: bool) -> str:
    """A session's line: verified, copying, or how many rigs failed."""
    rigs = job.transferring
    if not rigs:
        return "no rig transfers files"
    if job.verified:
        return f"verified ({len(rigs)} rig{'s' if len(rigs) != 1 else ''})"
    failed = [r for r in rigs if r.state == "failed"]
    if failed and not running:
        return f"{len(failed)} of {len(rigs)} rigs failed: Retry"
    return "copying" if running else "waiting"


def open_zmq_source(max_rate: float | None = None) -> Callable[[str, str, RigSpec | None], FileSource]:
    """Sources over zmq:// (the only scheme that serves files), optionally paced to ``max_rate`` bytes/s."""
    from transports.zmq.file_source import ZmqFileSource  # zmq loads only when a transfer runs

    def open_source(name: str, uri: str, spec: RigSpec | None) -> FileSource:
        return ZmqFileSource(name, uri, spec, max_rate=max_rate)

    return open_source


class TransferManager:
    """Background session transfers (see the module docstring).

    ``to``: the destination root (None: ``$RIGDECK_TRANSFER_DIR``, else the data folder); the window's
    setting writes it. Listeners are called with no argument on every change (progress included): a view
    repaints at most once per frame.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, to: str | os.PathLike[str] | None = None,
                 open_source: Callable[[str, str, RigSpec | None], FileSource] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.to = Path(to) if to else None
        self.jobs: dict[str, SessionTransfer] = {}
        self._specs: dict[str, Mapping[str, RigSpec]] = {}
        self._rigs: dict[str, Mapping[str, RigSpec | Mapping[str, Any]]] = {}
        self._tasks: dict[str, asyncio.Task[SessionTransfer]] = {}
        self._open_source = open_source
        self._one_at_a_time = asyncio.Lock()
        self._listeners: Listeners[[]] = Listeners("transfer listener")

    def subscribe(self, listener: Callable[[], None]) -> Unsubscribe:
        return self._listeners.add(listener)

    def _changed(self) -> None:
        self._listeners.notify()

    def running(self, exp_ref: str) -> bool:
        task = self._tasks.get(exp_ref)
        return task is not None and not task.done()

    def start(self, exp_ref: str, rigs: Mapping[str, RigSpec | Mapping[str, Any]],
              specs: Mapping[str, RigSpec] | None = None, to: str | os.PathLike[str] | None = None
              ) -> SessionTransfer:
        """Plan the session's transfer and run it in the background (a running one is left alone)."""
        if self.running(exp_ref):
            return self.jobs[exp_ref]
        job = plan_session(exp_ref, self.data_dir, rigs, to=to or self.to)
        self.jobs[job.exp_ref] = job
        self._rigs[job.exp_ref] = dict(rigs)
        self._specs[job.exp_ref] = dict(specs or {k: v for k, v in rigs.items() if isinstance(v, RigSpec)})
        self._tasks[job.exp_ref] = asyncio.create_task(self._run(job), name=f"transfer-{job.exp_ref}")
        self._changed()
        return job

    def retry(self, exp_ref: str) -> SessionTransfer | None:
        """Run a session's transfer again: only what is not verified is fetched."""
        job = self.jobs.get(exp_ref)
        if job is None or self.running(exp_ref):
            return job
        return self.start(exp_ref, self._rigs[exp_ref], self._specs.get(exp_ref), to=job.to.parents[2])

    async def _run(self, job: SessionTransfer) -> SessionTransfer:
        try:
            async with self._one_at_a_time:
                open_source = self._open_source or open_zmq_source()
                await run_session(job, open_source, self._specs.get(job.exp_ref), self._changed)
            # the session's saved report says where its files went and whether they are verified: rewritten
            # after every transfer (the window's, a Retry, a resume, `rigdeck transfer`), not only the first
            await in_worker(save_report_quietly, job.folder)
            return job
        finally:  # once the task is done: views read running() again (Retry lights up)
            asyncio.get_running_loop().call_soon(self._changed)

    async def wait(self, exp_ref: str) -> SessionTransfer:
        task = self._tasks.get(exp_ref)
        if task is not None:
            await asyncio.shield(task)
        return self.jobs[exp_ref]

    def pending(self, days: int | None = PENDING_DAYS,
                specs: Mapping[str, RigSpec] | None = None) -> list[PendingSession]:
        """Finished sessions (of the last ``days``) whose files are not all verified, running ones excluded."""
        since = _dt.date.today() - _dt.timedelta(days=days) if days else None
        return [p for p in pending_sessions(self.data_dir, since, specs) if not self.running(p.exp_ref)]

    def resume(self, pending: list[PendingSession], specs: Mapping[str, RigSpec] | None = None) -> None:
        """Start (queue) the transfer of each pending session."""
        for p in pending:
            self.start(p.exp_ref, session_rigs(p, specs), specs)

    async def close(self) -> None:
        """Cancel running transfers (their ``.part`` files and record let the next run resume)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task
