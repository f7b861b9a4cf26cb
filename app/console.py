"""The console's brain, without Qt: rigs file, links, live state, the current session, manipulators, log.

The window (``app/gui``) only binds widgets to this object: buttons call its coroutines, models read
its :class:`~core.state.LiveState`, the log panel reads its :class:`LogBook`. Nothing here imports Qt,
so every rule the window follows (when Start is allowed, what a main-sync choice does, what STOP ALL
reaches) is tested headless, and a newcomer finds "where does a button's click go" in one file.

The rigs file's links and their :class:`~core.monitor.RigMonitor` (``self.rigset``) live as long as the
file is loaded: the monitor keeps the rigs table live (link, status, last heard, incidents) before, during
and between sessions. There is no session until Start (or a reattach) makes one; it stays current after
it ends (its exp_ref stays on screen) until the next Start.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as _dt
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.alarms import AlarmBoard
from app.report_html import save_report_quietly
from app.rig_view import clock
from app.rigset import RigSet
from app.stop_all import StopAllReport, halt_and_confirm
from app.transfers import TransferManager
from app.wording import LINKS, PHASES, done_word, outcome_words, plain, position, rounded, step_word, uncapital
from core.config import ConfigError, RigSpec, Role, load_rigs, parse_rig, save_rigs
from core.drivers.manipulator import PlatformInfo, Vec4
from core.journal import JOURNAL_NAME, SessionSummary, find_unfinished, read_description
from core.link import LinkState, RigError, RigLink
from core.listeners import Listeners, Unsubscribe
from core.monitor import LINK_LOST, Incident, RigMonitor
from core.report import build_report
from core.session import FINAL, Phase, Progress, Session, SessionError, StepResult, status_name
from core.state import LiveState
from core.transfer import SessionTransfer
from transports.registry import TRANSPORTS

log = logging.getLogger(__name__)

LOG_LIMIT = 20_000
#: how far back the console looks for sessions to reattach (older ones: rigdeck run --attach)
REATTACH_DAYS = 14
#: one plain worker thread for file scans (not the loop's default executor: qasync's is a QThread pool that
#: Qt destroys at exit while idle threads still run)
_FILES = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rigdeck-files")


@dataclass(frozen=True)
class LogEntry:
    """One line of the log panel."""

    time: float
    level: str  # "debug" | "info" | "warning" | "error"
    rig: str  # "" for console-wide lines
    text: str  # in the experimenter's words (app.wording)
    detail: str = ""  # protocol detail (event names, ids, retries), shown on demand


class LogBook:
    """A bounded list of :class:`LogEntry` with listeners (the log panel is one)."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self.entries: collections.deque[LogEntry] = collections.deque(maxlen=limit)
        self._listeners: Listeners[[LogEntry]] = Listeners("log listener")

    def add(self, level: str, rig: str, text: str, detail: str = "") -> LogEntry:
        """Add a line; ``text`` goes through :func:`app.wording.plain` (its original becomes the detail)."""
        shown, extra = plain(text)
        if extra and extra in detail:  # the caller's detail already says it
            extra = ""
        entry = LogEntry(time.time(), level, rig, shown, rounded("; ".join(d for d in (detail, extra) if d)))
        self.entries.append(entry)
        self._listeners.notify(entry)
        return entry

    def subscribe(self, listener: Callable[[LogEntry], None]) -> Unsubscribe:
        return self._listeners.add(listener)


PROGRESS_LEVEL = {"sent": "debug", "reply": "info", "error": "error", "timeout": "error",
                  "phase": "info", "note": "info"}

Decider = Callable[[StepResult], Awaitable[str]]


@dataclass(frozen=True)
class StartOffer:
    """What Start asks when session rigs are known down: the rigs, whether going on without them is
    possible, and the question in plain words (the window's dialog shows it as is)."""

    down: list[str]
    can_continue: bool
    text: str


class Console:
    """Open with ``await console.load(path)``; close with ``await console.close()``."""

    def __init__(self, data_dir: str | Path, *, timeout: float = 5.0, poll_interval: float = 1.0,
                 link_factory: Callable[[RigSpec], RigLink] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.state = LiveState()
        self.logbook = LogBook()
        self.rigs_path: Path | None = None
        #: the rigs file last asked for, loaded or not: Reload reads it again once it is fixed
        self.wanted_path: Path | None = None
        self.specs: dict[str, RigSpec] = {}
        self.rigset: RigSet | None = None
        self.session: Session | None = None
        #: the experimenter's main-sync pick (None: the rigs file's role, else the rigs decide)
        self.main_sync_choice: str | None = None
        #: asked on a partial failure; None applies the session's default policy (rollback)
        self.decide: Decider | None = None
        self.platforms: dict[str, PlatformInfo] = {}
        self._link_factory = link_factory
        self._unwatch_rigs: list[Unsubscribe] = []
        #: (rig, manipulator id or "*") -> when the experimenter last stopped it (monotonic)
        self._stopped: dict[tuple[str, str], float] = {}
        self._stop_progress: Callable[[], None] | None = None
        #: losses and errors of the running session's rigs, until the experimenter acknowledges them
        self.alarms = AlarmBoard()
        self.alarms.on_change(lambda _alarm, _raised: self._publish_console())
        #: rigs reached at least once since the rigs file was loaded (their first "online" is worth a line)
        self._reached: set[str] = set()
        #: every rig's files are gathered after each stop, in the background (the Data panel shows them)
        self.transfers = TransferManager(self.data_dir)
        self.auto_transfer = True
        self._transfer_watch: set[asyncio.Task[None]] = set()

    # ================================================================ rigs file
    @property
    def links(self) -> dict[str, RigLink]:
        return self.rigset.links if self.rigset else {}

    @property
    def monitor(self) -> RigMonitor | None:
        return self.rigset.monitor if self.rigset else None

    async def load(self, path: str | Path) -> None:
        """Load a rigs file and connect to every rig. A bad file raises ConfigError and changes nothing."""
        self.wanted_path = Path(path)
        specs = load_rigs(path, TRANSPORTS)  # all or nothing: on error the current rigs stay
        await self._use(specs, Path(path))
        self.logbook.add("info", "", f"loaded {len(specs)} rig(s) from {path}")

    async def reload(self) -> None:
        """Read the rigs file again: the loaded one, or the one that failed to load (now fixed, perhaps)."""
        path = self.rigs_path or self.wanted_path
        if path is None:
            raise ConfigError("no rigs file loaded")
        await self.load(path)

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path else self.rigs_path
        if target is None:
            raise ConfigError("no rigs file to save to")
        header = "# remote_rigs.yaml - saved by the RigDeck console\n"
        save_rigs(target, self.specs, header=header)
        self.rigs_path = target
        self.logbook.add("info", "", f"saved {len(self.specs)} rig(s) to {target}")
        return target

    async def put_rig(self, name: str, value: Any, replace: str | None = None) -> RigSpec:
        """Add a rig (or replace the rig called ``replace``) from a rigs-file entry, then reconnect."""
        self._refuse_during_session("edit the rigs")
        spec = parse_rig(name, value, TRANSPORTS, str(self.rigs_path or "<console>"))
        if spec.name in self.specs and spec.name != replace:
            raise ConfigError(f"rig {spec.name!r}: duplicate name")
        specs = {}
        for existing, old in self.specs.items():
            specs[spec.name if existing == replace else existing] = spec if existing == replace else old
        specs.setdefault(spec.name, spec)
        await self._use(specs, self.rigs_path)
        return spec

    async def remove_rig(self, name: str) -> None:
        self._refuse_during_session("remove a rig")
        if name not in self.specs:
            raise ConfigError(f"no rig called {name!r}")
        await self._use({n: s for n, s in self.specs.items() if n != name}, self.rigs_path)

    async def _use(self, specs: dict[str, RigSpec], path: Path | None) -> None:
        self._refuse_during_session("change the rigs")
        await self._close_links()
        self.specs = specs
        self.rigs_path = path
        if self.main_sync_choice not in specs:
            self.main_sync_choice = None
        self.rigset = RigSet(specs, link_factory=self._link_factory, sessions_only=False,
                             poll_interval=self.poll_interval, timeout=self.timeout, state=self.state)
        monitor = self.rigset.prepare()
        self._unwatch_rigs = [monitor.on_link(self._on_link), monitor.on_incident(self._on_incident)]
        for name, link in self.manipulator_links().items():  # the rigs table says when this console only watches
            self._unwatch_rigs.append(link.manipulators.on_control(
                lambda in_control, n=name: self.state.set(["rigs", n, "watching"], not in_control)))
        await self.rigset.open()
        self._publish_console()

    def _on_link(self, name: str, state: str, error: str | None) -> None:
        """Losses and recoveries are logged once each, from the incidents; link states are details (debug),
        but for a rig's first "online" since the rigs file was loaded."""
        first = state == LinkState.ONLINE.value and name not in self._reached
        if first:
            self._reached.add(name)
        self.logbook.add("info" if first else "debug", name,
                         LINKS.get(state, state) + (f": {uncapital(plain(error)[0])}" if error else ""),
                         f"link {state}" + (f": {error}" if error else ""))

    def _on_incident(self, incident: Incident) -> None:
        lost = incident.kind == LINK_LOST
        detail = incident.detail or ""
        if incident.open:
            what = f"Lost at {clock(incident.since)}" if lost else f"Reported an error at {clock(incident.since)}"
            self.logbook.add("warning", incident.rig, what + (f": {uncapital(plain(detail)[0])}" if detail else ""),
                             detail)
        else:
            what = "Back" if lost else "Error cleared"
            span = f"{clock(incident.since)} to {clock(incident.until)}"
            self.logbook.add("info", incident.rig, f"{what} at {clock(incident.until)} ({span})", detail)
        spec = self.specs.get(incident.rig)
        role = self.session.role(incident.rig) if self.session and incident.rig in self.session.links \
            else spec.role.value if spec else Role.AUX.value
        self.alarms.incident(incident, role, self.in_running_session(incident.rig),
                             self.session.exp_ref if self.session else None)

    def warning(self) -> str | None:
        """What the session label and the status bar show in red, or None (see :meth:`AlarmBoard.warning`)."""
        return self.alarms.warning(self.session.exp_ref if self.session else None)

    def in_running_session(self, name: str) -> bool:
        """The rig takes part in the session under way (its loss is an alarm, not a cell)."""
        return self.active and self.session is not None and name in self.session.participants

    # ================================================================ session
    @property
    def phase(self) -> Phase:
        return self.session.phase if self.session else Phase.IDLE

    @property
    def active(self) -> bool:
        """A session is under way (the rigs must not be changed, the main sync is locked)."""
        s = self.session
        return s is not None and (s.busy is not None or s.phase not in FINAL | {Phase.IDLE})

    def can(self, action: str) -> bool:
        """What the session panel enables its buttons from."""
        if self.session is not None and self.session.busy is not None:
            return False
        if action == "start":
            return self.rigset is not None and not self.active and any(s.in_sessions for s in self.specs.values())
        if self.session is None:
            return False
        if action == "stop":
            return self.session.can("stop") and self.phase is Phase.RUNNING
        if action == "abort":
            return self.active or self.phase is Phase.INFO
        if action == "cleanup":
            return self.session.can("cleanup")
        return self.session.can(action)

    def set_main_sync(self, name: str | None) -> None:
        self._refuse_during_session("change the main-sync rig")
        if name is not None and (name not in self.specs or not self.specs[name].in_sessions):
            raise SessionError(f"{name!r} cannot be the main-sync rig (not a session rig of this file)")
        self.main_sync_choice = name
        self.logbook.add("info", name or "", f"main sync: {name or 'decided by the rigs'}")
        self._publish_console()

    def shown_main_sync(self) -> str | None:
        """The radio button that is on: the running session's main sync, else the user's/file's choice."""
        if self.session is not None and self.session.main_sync and (self.active or self.phase in FINAL):
            return self.session.main_sync
        if self.main_sync_choice:
            return self.main_sync_choice
        roles = [n for n, s in self.specs.items() if s.role is Role.MAIN_SYNC and s.enabled]
        return roles[0] if roles else None

    def known_down(self) -> list[str]:
        """The session rigs the monitor knows to be unreachable right now (Start asks about them at once,
        rather than waiting a timeout for each and refusing)."""
        return [n for n, spec in self.specs.items() if spec.in_sessions and n in self.links
                and self.state.get(["rigs", n, "link"]) == LinkState.UNREACHABLE.value]

    def start_offer(self, down: list[str]) -> StartOffer:
        """What Start offers when ``down`` rigs are known unreachable: go on without them (not when one is the
        main sync: the session has no clock without it), wait for them, or cancel."""
        main = self.shown_main_sync()
        names = ", ".join(down)
        if main in down:
            return StartOffer(down, False, f"The main-sync rig {main} cannot be reached (since "
                              f"{self._down_since(main)}). A session cannot run without its clock: wait for it "
                              f"to come back, or cancel and pick another main-sync rig.")
        return StartOffer(down, True, f"{names} cannot be reached (since {self._down_since(down[0])}). Start "
                          f"without {'them' if len(down) > 1 else 'it'} (the session is marked degraded), wait "
                          f"and start when {'they are' if len(down) > 1 else 'it is'} back, or cancel?")

    def _down_since(self, name: str) -> str:
        monitor = self.monitor
        lost = [i.since for i in (monitor.open_incidents([name]) if monitor else []) if i.kind == LINK_LOST]
        return clock(lost[0]) if lost else "start-up"

    async def wait_for_rigs(self, names: list[str]) -> None:
        """Return when every one of ``names`` is online (cancel the waiting task to give up)."""
        monitor = self.monitor
        if monitor is None:
            raise SessionError("no rigs loaded")
        back = asyncio.Event()

        def check(*_: Any) -> None:
            if all(self.state.get(["rigs", n, "link"]) == LinkState.ONLINE.value for n in names):
                back.set()

        unsubscribe = monitor.on_link(check)
        try:
            check()
            self.logbook.add("info", "", f"waiting for {', '.join(names)} to start the session")
            await back.wait()
        finally:
            unsubscribe()

    async def start(self, subject: str, details: Mapping[str, Any] | None = None,
                    without: list[str] | None = None) -> StepResult:
        """Info -> init -> start on every session rig (but ``without``: rigs known down, left out from the
        start, the session degraded). Returns the last step's result (failed or not)."""
        if self.active:
            raise SessionError("a session is already under way; stop it first")
        if not subject or not subject.strip():
            raise SessionError("type a subject first")
        if without and self.shown_main_sync() in without:
            raise SessionError(f"cannot start without the main-sync rig {self.shown_main_sync()}")
        session = await self._new_session(subject.strip(), details)
        if without:
            session.leave_out(without, "unreachable when the session started")
        result: StepResult | None = None
        for step in (session.info, session.init, session.start):
            result = await step()
            if not result.ok:
                self.logbook.add("error", "", f"{result.step} failed: {result.error}")
                break
        assert result is not None
        self._publish_console()
        await self._report_if_over(session)
        return result

    async def stop(self) -> StepResult:
        session = self._require_session()
        result = await session.stop()
        if session.phase is Phase.STOPPED:
            self.transfer_session(session)
        await self._report_if_over(session)
        return result

    def transfer_session(self, session: Session) -> SessionTransfer | None:
        """Start gathering a stopped session's files in the background (``transfer: false`` rigs excepted).

        Returns at once: the transfer runs as its own tasks, so the next session's steps never wait on it.
        """
        if not self.auto_transfer or not session.exp_ref:
            return None
        rigs = {name: session.specs[name] for name in session.participants if name in session.specs}
        job = self.transfers.start(session.exp_ref, rigs, rigs)
        if not job.transferring:
            return job
        self.logbook.add("info", "", f"gathering the files of {job.exp_ref} in the background", str(job.to))
        watch = asyncio.create_task(self._log_transfer(job.exp_ref))
        self._transfer_watch.add(watch)
        watch.add_done_callback(self._transfer_watch.discard)
        return job

    async def _log_transfer(self, exp_ref: str) -> None:
        job = await self.transfers.wait(exp_ref)
        for name, rig in job.rigs.items():
            if rig.error:
                self.logbook.add("error", name, f"files of {exp_ref} not transferred: {rig.error}")
        if job.verified:
            self.logbook.add("info", "", f"files of {exp_ref} verified in {job.to}")

    async def abort(self, reason: str = "aborted by the experimenter") -> StepResult:
        session = self._require_session()
        result = await session.interrupt(reason, error="Aborted")
        await self._report_if_over(session)
        return result

    async def cleanup(self) -> StepResult:
        session = self._require_session()
        result = await session.cleanup()
        await self._report_if_over(session)
        return result

    async def _report_if_over(self, session: Session) -> None:
        """Once a session has ended, its report goes beside its journal (again after a later step: cleanup,
        moves). Written in the file worker: the window does not wait on the disk."""
        if session.phase in FINAL and session.folder is not None:
            await self.write_report(session.folder)

    async def write_report(self, folder: Path) -> dict[str, Any] | None:
        """Rebuild and save the report of the session in ``folder`` (None when it could not be written)."""
        return await asyncio.get_running_loop().run_in_executor(_FILES, save_report_quietly, folder)

    async def open_report(self, path: str | Path) -> dict[str, Any]:
        """The report of a past session (its folder or its journal), rebuilt so files transferred since show;
        saved beside the journal when that folder can be written (a read-only lab share just shows it)."""
        folder = Path(path)
        if folder.name == JOURNAL_NAME:
            folder = folder.parent
        if not (folder / JOURNAL_NAME).is_file():
            raise SessionError(f"{folder} holds no session journal ({JOURNAL_NAME}): choose a session folder")
        report = await self.write_report(folder)
        if report is None:
            report = await asyncio.get_running_loop().run_in_executor(_FILES, build_report, folder)
        return report

    async def unfinished(self, days: int = REATTACH_DAYS) -> list[SessionSummary]:
        """Sessions of the last ``days`` days a dead console left running (journal not final), newest first.
        Read in a worker thread: it is file I/O over the data folder, and the window must not wait on it."""
        since = _dt.date.today() - _dt.timedelta(days=days)
        try:
            found = await asyncio.get_running_loop().run_in_executor(_FILES, find_unfinished, self.data_dir, since)
        except OSError:
            return []
        return sorted(found, key=lambda s: s.started or 0, reverse=True)

    async def attach(self, summary: SessionSummary) -> Session:
        """Take over an unfinished session: its rigs must be in the loaded rigs file (by name)."""
        if self.active:
            raise SessionError("a session is already under way")
        names = summary.participants or list(summary.rigs)
        missing = [n for n in names if n not in self.links]
        if missing:
            raise SessionError(f"cannot reattach {summary.exp_ref}: rigs {missing} are not in the loaded rigs file")
        links = {n: self.links[n] for n in self.links if n in names or not self.specs[n].in_sessions}
        specs = {n: self.specs[n] for n in links}
        await self._close_session()
        session = Session.attach(links, summary, specs, timeout=self.timeout, monitor=self.monitor,
                                 decide=self._decide)
        try:  # what the experimenter typed at Start (project, procedures, notes) is in the description
            described = read_description(summary.folder)
            session.details.update({k: described[k] for k in ("projects", "procedures", "notes") if described.get(k)})
        except Exception as ex:  # unreadable or bad YAML: the session still reattaches, the details stay empty
            log.info("no details for %s from its description: %s", summary.exp_ref, ex)
        self._watch(session)
        await session.open()
        was = PHASES.get(summary.phase or "", summary.phase)
        self.logbook.add("info", "", f"reattached to {summary.exp_ref} (it was {was})",
                         f"journal phase {summary.phase}")
        self._publish_console()
        return session

    async def _new_session(self, subject: str, details: Mapping[str, Any] | None) -> Session:
        await self._close_session()
        session = Session(self.links, self.specs, subject=subject, data_dir=self.data_dir,
                          main_sync=self.main_sync_choice, timeout=self.timeout, monitor=self.monitor,
                          details=details, decide=self._decide)
        self._watch(session)
        await session.open()
        return session

    def _watch(self, session: Session) -> None:
        self.session = session
        self._stop_progress = session.on_progress(self._on_progress)

    async def _decide(self, result: StepResult) -> str:
        if self.decide is None:
            return self.session.policy.value if self.session else "rollback"
        return await self.decide(result)

    def _on_progress(self, p: Progress) -> None:
        if p.kind == "note" and p.rig is not None and p.detail.startswith("link "):
            return  # a link change: _on_link / _on_incident log it once (the session tells its journal)
        level = PROGRESS_LEVEL.get(p.kind, "info")
        if p.kind == "phase":
            self._publish_console()
        raw = f"{p.step} {p.kind}: {p.detail}"
        if p.kind == "phase":
            text = f"session {PHASES.get(p.detail, p.detail)}"
        elif p.kind == "sent":
            text = f"{step_word(p.step)}: asked"
        elif p.kind == "reply" and p.outcome is not None:
            text = f"{done_word(p.step)} ({status_name(p.outcome.status)})"
        elif p.outcome is not None:
            text = f"{step_word(p.step)} failed: {outcome_words(p.outcome.result, p.outcome.error)}"
        else:
            text = p.detail if p.kind == "note" else f"{step_word(p.step)}: {p.detail}"
        self.logbook.add(level, p.rig or "", text, raw)  # (the rigs table's Step cell is the session's to write)

    def _require_session(self) -> Session:
        if self.session is None:
            raise SessionError("no session: start one first" if self.rigset else "no rigs loaded")
        return self.session

    def _refuse_during_session(self, what: str) -> None:
        if self.active:
            raise SessionError(f"cannot {what} during a session (phase {self.phase.value})")

    def _publish_console(self) -> None:
        self.state.update(["console"], {"main_sync": self.shown_main_sync(), "active": self.active,
                                        "warning": self.warning(),
                                        "rigs_file": str(self.rigs_path) if self.rigs_path else None})

    # ================================================================ manipulators
    def manipulator_links(self) -> dict[str, Any]:
        """name -> link for the rigs that carry manipulators (``link.manipulators`` is their client)."""
        return {n: link for n, link in self.links.items() if hasattr(link, "manipulators")}

    def client(self, rig: str) -> Any:
        links = self.manipulator_links()
        if rig not in links:
            raise SessionError(f"{rig!r} is not a manipulator rig")
        return links[rig].manipulators

    async def platform(self, rig: str) -> PlatformInfo:
        if rig not in self.platforms:
            self.platforms[rig] = await self.client(rig).platform_info()
        return self.platforms[rig]

    async def check_target(self, rig: str, pos: Vec4) -> None:
        """Refuse a target outside the platform's travel (0..dimension on every axis) before sending it."""
        dims = (await self.platform(rig)).dimensions
        for axis, value, limit in zip("xyzw", pos.as_tuple(), dims.as_tuple(), strict=True):
            if not math.isfinite(value) or value < 0 or value > limit:
                raise SessionError(f"{axis} = {value:g} mm is outside the travel of {rig} (0 to {limit:g} mm)")

    async def move(self, rig: str, manipulator: str, pos: Vec4, speed: float) -> Vec4 | None:
        """Move and wait for arrival; None when a stop (STOP ALL included) halted it on the way."""
        await self.check_target(rig, pos)
        self.logbook.add("info", rig, f"move probe {manipulator} to {position(pos.as_tuple())} at {speed:g} mm/s")
        move = self._unless_stopped(rig, manipulator, self.client(rig).set_position(manipulator, pos, speed))
        return await self._journaled(rig, manipulator, "move", pos.as_dict(), speed, move)

    async def set_depth(self, rig: str, manipulator: str, depth: float, speed: float) -> float | None:
        self.logbook.add("info", rig, f"depth of probe {manipulator} to {depth:.3f} mm at {speed:g} mm/s")
        move = self._unless_stopped(rig, manipulator, self.client(rig).set_depth(manipulator, depth, speed))
        return await self._journaled(rig, manipulator, "depth", depth, speed, move)

    def _probe_position(self, rig: str, manipulator: str) -> dict[str, Any] | None:
        """Where the live state last saw a probe ({x, y, z, w} mm), if it has."""
        entry = self.state.get(["rigs", rig, "service", "manipulators", manipulator])
        return {k: entry[k] for k in "xyzw" if k in entry} if isinstance(entry, dict) else None

    def _journal(self, kind: str, **fields: Any) -> None:
        """A record in the current session's journal, when it has one open (moves between sessions are not
        any session's: the log has them)."""
        session = self.session
        if session is not None and session.journal.file is not None:
            session.journal.write(kind, **fields)

    async def _journaled(self, rig: str, manipulator: str, action: str, target: Any, speed: float,
                         move: Awaitable[Any]) -> Any:
        """Run a move and journal it once it ends (when it started, from where, the target, where it got,
        and whether it reached it, was halted or failed): the session report lists moves and depth traces."""
        since, before = time.time(), self._probe_position(rig, manipulator)
        outcome, error, reached = "cancelled", None, None
        try:
            reached = await move
            outcome = "reached" if reached is not None else "halted"
            return reached
        except Exception as ex:
            outcome, error = "failed", str(ex)
            raise
        finally:
            where = reached.as_dict() if isinstance(reached, Vec4) else reached
            self._journal("move", rig=rig, manipulator=manipulator, action=action, target=target, speed=speed,
                          before=before, reached=where if where is not None else self._probe_position(rig, manipulator),
                          outcome=outcome, error=error, **{"from": round(since, 6)})

    async def _unless_stopped(self, rig: str, manipulator: str, move: Awaitable[Any]) -> Any:
        """A move that a stop cut short is what the experimenter asked for: log it, don't raise it."""
        t0 = time.monotonic()
        try:
            return await move
        except RigError as ex:
            stopped = max(self._stopped.get((rig, manipulator), 0.0), self._stopped.get((rig, "*"), 0.0))
            if stopped < t0:
                raise
            self.logbook.add("info", rig, f"probe {manipulator} halted by a stop before reaching its target", str(ex))
            return None

    def watching(self, rig: str) -> bool:
        """True when another console controls ``rig``'s manipulators and this one only watches (a RigDeck
        manipulator server lets one console move them; ephys-link has a single client, always in control). Read
        from ``rigs/<rig>/watching``, which the manipulator client's control notices keep (see :meth:`_use`)."""
        return self.state.get(["rigs", rig, "watching"]) is True

    async def take_control(self, rig: str) -> bool:
        """Become the console that moves ``rig``'s manipulators; the one that had control is told and watches."""
        ok = bool(await self.client(rig).take_control())
        self.logbook.add("info" if ok else "error", rig, "this console now moves the manipulators" if ok
                         else "could not take control of the manipulators")
        return ok

    async def stop_manipulator(self, rig: str, manipulator: str) -> None:
        self.logbook.add("info", rig, f"stop probe {manipulator}")
        self._stopped[(rig, manipulator)] = time.monotonic()
        self._journal("move", rig=rig, manipulator=manipulator, action="stop", outcome="asked")
        await self.client(rig).stop(manipulator)

    async def set_inside_brain(self, rig: str, manipulator: str, inside: bool) -> bool:
        self.logbook.add("info", rig, f"probe {manipulator} inside brain: {'on' if inside else 'off'}")
        return await self.client(rig).set_inside_brain(manipulator, inside)

    async def stop_all(self, report: StopAllReport | None = None) -> StopAllReport:
        """STOP ALL to every manipulator rig at once, then confirm every probe stands still (the report says
        so, or which probe did not). Goes straight out: it never waits on another request."""
        links = self.manipulator_links()
        now = time.monotonic()
        self._stopped.update({(name, "*"): now for name in links})
        report = await halt_and_confirm({name: link.manipulators for name, link in links.items()}, report=report)
        for name in links:  # journaled once the stop went out: nothing may delay it
            self._journal("move", rig=name, manipulator="*", action="stop_all", outcome="ok" if report.ok else "failed")
        self.logbook.add("warning" if report.ok else "error", "", report.text())
        return report

    # ================================================================ shutdown
    async def _close_session(self, withdraw: bool = False) -> None:
        """Close the current session (``withdraw``: and take it off the screen: no session follows it)."""
        if self._stop_progress is not None:
            self._stop_progress()
            self._stop_progress = None
        if self.session is not None:
            await self.session.close()
            await self._report_if_over(self.session)
            if withdraw:
                self.session.withdraw()
            self.session = None

    async def _close_links(self) -> None:
        await self._close_session(withdraw=True)
        for unwatch in self._unwatch_rigs:
            unwatch()
        self._unwatch_rigs.clear()
        if self.rigset is not None:
            await self.rigset.close()
            self.rigset = None
        self.platforms.clear()

    async def close(self) -> None:
        """Close links and the journal. Never stops the rigs: a console closing must not end an experiment.
        Running transfers are cancelled; their partial files and record let the next start resume them."""
        for watch in list(self._transfer_watch):
            watch.cancel()
        await self.transfers.close()
        await self._close_links()
