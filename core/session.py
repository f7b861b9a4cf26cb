"""The session engine: one experiment across several rigs, the part iblrig's NetworkSession plays.

It drives ready :class:`~core.link.RigLink` objects (it never opens a socket, so every rule below is
tested with in-memory fakes) through the iblutil conversation:

``info`` (EXPINFO: agree on the main-sync rig and the exp_ref) -> ``init`` (EXPINIT) -> ``start``
(EXPSTART) -> ``stop`` (EXPEND), with ``interrupt`` (EXPINTERRUPT + an error record), ``cleanup``
(EXPCLEANUP), ``status`` (EXPSTATUS) and ``alyx`` (relay an Alyx token) besides.

Rules worth knowing:

- Every fan-out is concurrent (one task per rig) with a per-rig timeout; each rig's :class:`Outcome` is
  kept on its own (reply, error report, timeout). iblutil's Services await the echoes one rig after the
  other; RigDeck does not. The one deliberate ordering: the main-sync rig, which owns the session clock,
  is started *before* the others and stopped *after* them (``main_sync_first``), so no stream has data
  outside the clock's span. That costs one extra round trip (~0.3 ms on a LAN).
- When some rigs fail to init or start, the *policy* decides: ``rollback`` (default) interrupts the rigs
  that did get going and fails the session; ``continue`` goes on without the failed rigs and marks the
  session *degraded*. A failing main-sync rig always rolls back: without the clock the data are useless.
  A rig dropped because it did not *answer* EXPINIT / EXPSTART may have got it all the same
  (:attr:`Session.maybe_going`): a stop, abort or rollback stands it down with an EXPINTERRUPT too, unless it has
  since reported CONNECTED or STOPPED, so no rig runs on after the session.
- Main sync: the user's choice (``main_sync=``, or the rigs file's ``role: main_sync``) is told
  ``main_sync: true`` and the others ``false``; without a choice the single rig that claims it wins, and
  none or several claimants is an error naming them. The exp_ref comes from the main-sync rig's EXPINFO
  reply, else it is the next free ``YYYY-MM-DD_N_subject`` of the data folder.
- Everything sent and received goes to the :class:`~core.journal.Journal` (secrets redacted) and every
  step ends with an fsync; the experiment description is rewritten atomically at each phase change.
- Rig liveness (link state, ExpStatus, round trips, incidents, the ``rigs/<name>`` live state) belongs
  to the :class:`~core.monitor.RigMonitor`, which lives as long as the links; the session reports its
  replies to it, reads statuses from it, and journals its link changes, status changes and incidents while
  it runs. The session writes ``session/...`` of the live state: its phase, and per rig its role in the
  session and its last step (``session/rigs/<name>/{main_sync, progress}``).
- :class:`Phase` is the session's state machine; :meth:`Session.can` says which actions are allowed now,
  which is all a GUI needs to enable its buttons.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.config import RigSpec, Role
from core.expinfo import claimants, first_dict, info_payload, names_text, pick_main_sync
from core.fan_out import FanOut
from core.journal import DESCRIPTION_NAME, JOURNAL_NAME, REDACTED, SessionSummary, iso, redact
from core.link import RigLink
from core.listeners import Listeners, Unsubscribe
from core.monitor import DEFAULT_TIMEOUT, Incident, RigMonitor, reply_status, spec_seconds, status_name
from core.paths import check_subject
from core.protocol import ExpMessage, ExpStatus, parse_exp_ref
from core.session_files import SessionJournal, claim_folder, free_instead, write_description
from core.state import LiveState
from core.steps import (
    ACTIONS,
    ALWAYS,
    FINAL,
    AlyxResult,
    Decider,
    Outcome,
    Phase,
    Policy,
    Progress,
    ProgressListener,
    SessionError,
    StepResult,
)
from core.unfinished import restart_notes
from core.version import version

log = logging.getLogger(__name__)

class Session:
    """One multi-rig session over ready links. Create, ``await open()``, step through, ``await close()``.

    ``monitor`` is the :class:`~core.monitor.RigMonitor` of the links (the console's, which outlives the
    session); without one the session makes its own for its lifetime (tests, scripts), polling every
    ``poll_interval`` s when given. The live state is the monitor's.
    """

    #: settled by :meth:`info` (or taken from the journal by :meth:`attach`)
    main_sync: str | None = None
    exp_ref: str | None = None
    folder: Path | None = None
    #: epoch seconds of EXPSTART and of the end; how the session ended (completed, aborted, failed...)
    started: float | None = None
    ended: float | None = None
    outcome: str | None = None
    #: the step under way, if any (no other step may start meanwhile)
    busy: str | None = None

    def __init__(
        self,
        links: Mapping[str, RigLink],
        specs: Mapping[str, RigSpec] | None = None,
        *,
        subject: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        main_sync: str | None = None,
        policy: Policy | str = Policy.ROLLBACK,
        timeout: float = DEFAULT_TIMEOUT,
        monitor: RigMonitor | None = None,
        poll_interval: float | None = None,
        state: LiveState | None = None,
        main_sync_first: bool = True,
        today: Callable[[], _dt.date] = _dt.date.today,
        details: Mapping[str, Any] | None = None,
        decide: Decider | None = None,
    ) -> None:
        specs = dict(specs or {})
        unknown = sorted(set(specs) - set(links))
        if unknown:
            raise SessionError(f"rig spec(s) without a link: {unknown}")
        self.links: dict[str, RigLink] = dict(links)
        self.specs = specs
        #: rigs that take session messages (a manipulator rig is watched, not started)
        self.rigs: list[str] = [n for n in self.links if n not in specs or specs[n].in_sessions]
        self.participants: list[str] = list(self.rigs)
        self.subject = check_subject(subject) if subject else None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        try:
            self.policy = Policy(str(policy).lower())
        except ValueError:
            raise SessionError(f"unknown policy {policy!r}; expected one of {[p.value for p in Policy]}") from None
        self.timeout = float(timeout)
        self.main_sync_first = main_sync_first
        self._today = today
        #: what the experimenter typed besides the subject (projects, procedures, notes): into the description
        self.details: dict[str, Any] = {k: v for k, v in (details or {}).items() if v not in (None, "", [])}
        #: asked when some rigs (not all, not the main sync) fail a step; None applies ``policy`` unasked
        self.decide = decide
        #: the user's choice (explicit, else the rigs file's role), or None: the rigs decide
        self.main_sync_choice = self._main_sync_choice(main_sync)
        self.phase, self.busy, self.degraded, self.attached = Phase.IDLE, None, False, False
        self.rig_descriptions: dict[str, Any] = {}
        #: rigs dropped after no answer to EXPINIT / EXPSTART: they may have got it all the same and be going
        #: on their own, so a stop or an abort stands them down too (until one reports CONNECTED / STOPPED)
        self.maybe_going: set[str] = set()
        #: the monitor's incidents with this session's rigs while it ran (by id: a closed one replaces its open form)
        self.incidents: dict[int, Incident] = {}
        self._closed = False
        self._listeners: Listeners[[Progress]] = Listeners("progress listener")
        self.journal = SessionJournal()
        self.monitor, self._own_monitor = self._monitor_for(monitor, state, poll_interval)
        self.state = self.monitor.state
        self._fan_out = FanOut(self.links, self.monitor, self.journal, self._emit, self.rig_timeout,
                               self._settle_if_idle)
        self._init_state()
        self._unwatch = self._watch_monitor()

    def _watch_monitor(self) -> list[Unsubscribe]:
        """Listen to the monitor until :meth:`close`; incidents already open are this session's too."""
        m = self.monitor
        unwatch = [m.on_link(self._on_link), m.on_status(self._on_status), m.on_incident(self._on_incident)]
        for incident in m.open_incidents(self.links):
            self._on_incident(incident)
        return unwatch

    def _main_sync_choice(self, main_sync: str | None) -> str | None:
        if main_sync is not None and main_sync not in self.links:
            raise SessionError(f"main-sync rig {main_sync!r} is not one of the rigs: {sorted(self.links)}")
        roles = [n for n in self.rigs if n in self.specs and self.specs[n].role is Role.MAIN_SYNC]
        return main_sync or (roles[0] if roles else None)

    def _monitor_for(self, monitor: RigMonitor | None, state: LiveState | None,
                     poll_interval: float | None) -> tuple[RigMonitor, bool]:
        """(the monitor to read rigs from, whether this session made it and must close it)."""
        if monitor is None:
            return RigMonitor(self.links, self.specs, state=state, poll_interval=poll_interval,
                              timeout=self.timeout), True
        strangers = sorted(n for n, link in self.links.items() if monitor.links.get(n) is not link)
        if strangers:
            raise SessionError(f"rig(s) {strangers} are not watched by the given monitor")
        if state is not None and state is not monitor.state:
            raise SessionError("a session over a monitor writes into the monitor's live state")
        return monitor, False

    @property
    def statuses(self) -> dict[str, int | None]:
        """Each session rig's last known ExpStatus (from the monitor)."""
        return {n: self.monitor.status(n) for n in self.rigs}

    # ==================================================================== public helpers
    def on_progress(self, listener: ProgressListener) -> Unsubscribe:
        """Call ``listener(Progress)`` for every send, reply, failure and phase change."""
        return self._listeners.add(listener)

    def can(self, action: str) -> bool:
        """Whether ``action`` is allowed now: what a GUI enables its buttons from."""
        if self.busy is not None or self._closed:
            return False
        return action in ALWAYS or action in ACTIONS[self.phase]

    @property
    def journal_path(self) -> Path | None:
        return self.folder / JOURNAL_NAME if self.folder else None

    @property
    def description_path(self) -> Path | None:
        return self.folder / DESCRIPTION_NAME if self.folder else None

    def rig_timeout(self, name: str) -> float:
        return spec_seconds(self.specs.get(name), "timeout", self.timeout)

    def role(self, name: str) -> str:
        """The rig's role in this session; before main sync is settled, the one the rigs file gives it."""
        if name == self.main_sync:
            return Role.MAIN_SYNC.value
        spec = self.specs.get(name)
        role = spec.role if spec else Role.AUX
        return Role.AUX.value if role is Role.MAIN_SYNC and self.main_sync is not None else role.value

    # ==================================================================== lifecycle
    async def open(self) -> None:
        """Start the session's own monitor, if it made one (links are the caller's: connected already)."""
        if self._own_monitor:
            await self.monitor.start()

    async def close(self) -> None:
        """Stop listening to the monitor and close the journal. Links (and a given monitor) stay: the caller's."""
        self._closed = True
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch.clear()
        if self._own_monitor:
            await self.monitor.close()
        self.journal.close()

    def withdraw(self) -> None:
        """Take this session's part of the live state away (the console has no current session any more)."""
        self.state.delete(["session"])

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @classmethod
    def attach(
        cls, links: Mapping[str, RigLink], summary: SessionSummary, specs: Mapping[str, RigSpec] | None = None,
        **kwargs: Any,
    ) -> Session:
        """Take over a session a dead console left behind (from its journal), to poll and stop its rigs."""
        if not summary.exp_ref:
            raise SessionError(f"{summary.path}: the journal names no exp_ref; nothing to attach to")
        kwargs.setdefault("policy", summary.policy or Policy.ROLLBACK)
        kwargs.setdefault("data_dir", summary.folder.parents[2])
        session = cls(links, specs, subject=summary.subject, main_sync=None, **kwargs)
        session.attached = True
        session.exp_ref = summary.exp_ref
        session.main_sync = summary.main_sync
        session.folder = summary.folder
        session.participants = [n for n in (summary.participants or session.rigs) if n in session.links]
        session.degraded = summary.degraded
        session.maybe_going = {n for n in summary.maybe_going if n in session.links}
        session.started = summary.started
        session.phase = Phase(summary.phase) if summary.phase in Phase._value2member_map_ else Phase.IDLE
        session.monitor.expect(session.rigs, session._expected_status())
        for name, status in summary.statuses.items():
            if name in session.rigs:
                session.monitor.assume_status(name, status)
        session._open_journal("attach", previous_phase=summary.phase, problems=summary.problems)
        session._publish_session()
        return session

    # ==================================================================== steps
    async def info(self) -> StepResult:
        """EXPINFO to every rig: settle the main-sync rig and the exp_ref, create the session folder."""
        async with self._step("info") as result:
            if not self.subject:
                return self._refuse(result, "no subject given")
            if self.data_dir is None:
                return self._refuse(result, "no data directory given")
            choice = self.main_sync_choice
            if choice is not None and choice not in self.rigs:
                return self._refuse(result, f"main-sync rig {choice!r} does not take session messages")
            result.outcomes = await self._fan_out("info", ExpMessage.EXPINFO, self.participants,
                                                  self._info_payload, expect=None)
            infos = {n: first_dict(o.reply) for n, o in result.outcomes.items() if o.ok}
            self.rig_descriptions = {n: info.get("experiment_description") or {} for n, info in infos.items()}
            claiming, failed = claimants(infos), result.failed
            if failed and self.policy is Policy.ROLLBACK:
                return self._refuse(result, f"no answer to EXPINFO from {names_text(failed)} (policy rollback)")
            main, warnings, error = pick_main_sync(choice, failed, claiming, self.participants)
            result.warnings += warnings
            if main is None:
                return self._refuse(result, error or "no main-sync rig")
            offered = await self._offered_exp_ref(result, main, infos.get(main, {}).get("exp_ref"))
            try:
                exp_ref, folder = claim_folder(self.data_dir, self.subject, offered, self._today())
            except ValueError as ex:
                return self._refuse(result, str(ex))
            if failed:
                result.dropped = self._drop(failed, "info")
            self.main_sync, self.exp_ref, self.folder = main, exp_ref, folder
            for name in self.rigs:
                self.state.set(["session", "rigs", name, "main_sync"], name == main)
            self._open_journal("session")
            self.journal.write("main_sync", main_sync=main, chosen=choice is not None, claimants=claiming)
            for warning in result.warnings:
                self.journal.write("note", text=warning)
            self._set_phase(Phase.INFO)
            self._write_description()
            return result

    def leave_out(self, names: Sequence[str], why: str) -> list[str]:
        """Before info: run without these rigs (known to be down), degraded from the start. Every left-out rig
        is journaled with the reason; the main-sync choice cannot be left out (there is no clock without it)."""
        if self.phase is not Phase.IDLE or self.busy:
            raise SessionError(f"rigs can only be left out before the session starts (phase {self.phase.value})")
        unknown = sorted(set(names) - set(self.rigs))
        if unknown:
            raise SessionError(f"cannot leave out {unknown}: not rigs of this session")
        if self.main_sync_choice in names:
            raise SessionError(f"cannot leave out the main-sync rig {self.main_sync_choice}")
        for name in names:
            self._skip("info", name, ExpMessage.EXPINFO.name, why)
        return self._drop(list(names), "info")

    def _info_payload(self, name: str, proposal: str | None = None) -> tuple[Any, ...]:
        return info_payload(self.subject, self.main_sync_choice, name, proposal)

    async def _offered_exp_ref(self, result: StepResult, main: str, offered: Any) -> Any:
        """The main-sync rig's exp_ref. One it numbered without the sessions this console already filed (another
        main-sync rig before, another data folder) gets the next free number proposed, once: a RigDeck rig
        takes it; a rig that insists on its own gets claim_folder's clear error."""
        assert self.data_dir is not None and self.subject is not None
        proposal = free_instead(self.data_dir, self.subject, offered)
        if proposal is None:
            return offered
        result.warnings.append(f"{main} offered exp_ref {offered}, already used here; proposed {proposal}")
        again = await self._fan_out("info", ExpMessage.EXPINFO, [main],
                                    lambda n: self._info_payload(n, proposal), expect=None)
        return first_dict(again[main].reply).get("exp_ref") or offered if again[main].ok else offered

    async def init(self) -> StepResult:
        """EXPINIT ``{"exp_ref": ...}`` to every participant; the policy handles failures."""
        async with self._step("init") as result:
            data = {"exp_ref": self.exp_ref}
            result.outcomes = await self._fan_out(
                "init", ExpMessage.EXPINIT, self.participants, lambda n: (data,), ExpStatus.INITIALIZED)
            if await self._apply_policy(result):
                self._set_phase(Phase.INITIALISED)
                self._write_description()
            return result

    async def start(self, data: Any = None) -> StepResult:
        """EXPSTART ``exp_ref, data``: the main-sync rig first (it owns the clock), then the rest at once."""
        async with self._step("start") as result:
            first, rest = self._ordered(self.participants)
            outcomes: dict[str, Outcome] = {}
            if first:
                outcomes.update(await self._fan_out(
                    "start", ExpMessage.EXPSTART, first, lambda n: (self.exp_ref, data), ExpStatus.RUNNING))
            if all(o.ok for o in outcomes.values()):
                outcomes.update(await self._fan_out(
                    "start", ExpMessage.EXPSTART, rest, lambda n: (self.exp_ref, data), ExpStatus.RUNNING))
            else:
                for name in rest:
                    outcomes[name] = self._skip("start", name, "EXPSTART", "main-sync rig did not start")
            result.outcomes = {n: outcomes[n] for n in self.participants if n in outcomes}
            if await self._apply_policy(result):
                self.started = time.time()
                self._set_phase(Phase.RUNNING)
                self._write_description()
            return result

    async def stop(self, data: Any = None) -> StepResult:
        """EXPEND to every participant: the others at once, then the main-sync rig last."""
        async with self._step("stop") as result:
            payload = [] if data is None else data
            rest, last = self._ordered(self.participants, main_last=True)
            outcomes, result.stood_down = await asyncio.gather(
                self._fan_out("stop", ExpMessage.EXPEND, rest, lambda n: (payload,), ExpStatus.STOPPED),
                self._stand_down("stop"))
            if last:
                outcomes.update(await self._fan_out(
                    "stop", ExpMessage.EXPEND, last, lambda n: (payload,), ExpStatus.STOPPED))
            result.outcomes = {n: outcomes[n] for n in self.participants if n in outcomes}
            result.ok = not result.failed
            self._warn_stand_down(result)
            restarts = self._tell_restarts(result)
            if result.failed:
                result.error = "; ".join(restarts) or f"{names_text(result.failed)} did not confirm the stop"
                self.journal.write("note", text=result.error)
            self._end(Phase.STOPPED, "completed" if result.ok and not self.degraded else "completed_with_errors")
            return result

    async def interrupt(self, message: str = "interrupted by the user", error: str = "Interrupted") -> StepResult:
        """EXPINTERRUPT with an iblrig-style error record to every participant, at once: the session is aborted."""
        async with self._step("interrupt") as result:
            result.outcomes, result.stood_down = await asyncio.gather(
                self._interrupt_all("interrupt", self.participants, error, message), self._stand_down("interrupt"))
            result.ok = not result.failed
            self._warn_stand_down(result)
            self._tell_restarts(result)
            if result.failed:
                result.error = f"{names_text(result.failed)} did not confirm the interrupt"
            self._end(Phase.ABORTED, "aborted", reason=message)
            return result

    async def abort(self, message: str) -> StepResult | None:
        """Whatever the phase (a Ctrl-C mid-step included): interrupt what may be going, unless already over."""
        if self.phase in FINAL or (self.phase is Phase.IDLE and self.folder is None):
            return None
        self.busy = None
        return await self.interrupt(message, error="Aborted")

    async def cleanup(self, data: Any = None) -> StepResult:
        """EXPCLEANUP to every participant (rigs go back to CONNECTED, ready for another session)."""
        async with self._step("cleanup") as result:
            result.outcomes = await self._fan_out(
                "cleanup", ExpMessage.EXPCLEANUP, self.participants, lambda n: (data,), ExpStatus.CONNECTED)
            result.ok = not result.failed
            if result.failed:
                result.error = f"{names_text(result.failed)} did not confirm the cleanup"
            self.state.set(["session", "cleaned"], result.ok)
            self.journal.write("cleanup", ok=result.ok)
            self.journal.sync()
            return result

    async def status(self, names: Iterable[str] | None = None) -> StepResult:
        """EXPSTATUS (with the status the console expects) to the given rigs (default: all session rigs)."""
        targets = list(names) if names is not None else list(self.rigs)
        result = StepResult("status", phase=self.phase)
        mine = int(self._expected_status())
        result.outcomes = await self._fan_out("status", ExpMessage.EXPSTATUS, targets, lambda n: (mine,), expect=None)
        result.ok = not result.failed
        self.journal.sync()
        return result

    async def alyx(self, base_url: str | None = None, token: dict[str, Any] | None = None) -> AlyxResult:
        """Relay an Alyx token: given one, send it to every rig; else ask them all and pass the first one on.

        The main-sync rig's token is preferred when several rigs have one. Tokens are kept out of the
        journal, the progress reports and the logs (:func:`core.journal.redact_alyx`).
        """
        targets = list(self.participants)
        source = None
        outcomes: dict[str, Outcome] = {}
        if not token:
            outcomes = await self._fan_out("alyx", ExpMessage.ALYX, targets, lambda n: (None, {}), expect=None)
            holders = []
            for name, o in outcomes.items():
                reply = o.reply or []
                if o.ok and len(reply) >= 2 and isinstance(reply[1], dict) and reply[1]:
                    holders.append((name, reply[0], reply[1]))
            holders.sort(key=lambda h: h[0] != self.main_sync)
            if not holders:
                self.journal.write("alyx", source=None, relayed=[])
                self.journal.sync()
                return AlyxResult(None, None, [], {}, outcomes)
            source, base_url, token = holders[0]
            holder_names = {h[0] for h in holders}
            targets = [n for n in targets if n not in holder_names]
        relayed = await self._fan_out("alyx", ExpMessage.ALYX, targets, lambda n: (base_url, token), expect=None)
        self.journal.write("alyx", source=source, base_url=base_url, users=sorted(token), relayed=sorted(relayed))
        self.journal.sync()
        return AlyxResult(source, base_url, sorted(map(str, token)), relayed, outcomes)

    # ==================================================================== step machinery
    @contextlib.asynccontextmanager
    async def _step(self, action: str) -> AsyncIterator[StepResult]:
        """Refuse a step the phase does not allow; the session is busy while it runs; fsync when it ends."""
        if not self.can(action):
            why = f"busy with {self.busy}" if self.busy else f"phase is {self.phase.value}"
            raise SessionError(f"cannot {action} now: {why}")
        result = StepResult(action)
        self.busy = action
        self.state.set(["session", "busy"], action)
        self._emit(Progress(action, None, "note", f"{action} ..."))
        try:
            yield result
        except asyncio.CancelledError:
            self.journal.write("note", text=f"{action} cancelled")
            raise
        finally:
            self.busy = None
            self.state.set(["session", "busy"], None)
            result.phase = self.phase
            self.journal.sync()

    def _tell_restarts(self, result: StepResult) -> list[str]:
        """Warn (progress, journal, result) about every rig that says it restarted during the session."""
        notes = restart_notes(result.outcomes)
        for note in notes:
            result.warnings.append(note)
            self.journal.write("note", text=note)
            self._emit(Progress(result.step, None, "note", note))
        return notes

    def _refuse(self, result: StepResult, error: str) -> StepResult:
        result.ok = False
        result.error = error
        self.journal.write("refused", step=result.step, error=error)
        self._emit(Progress(result.step, None, "note", error))
        return result

    def _end(self, phase: Phase, outcome: str, **extra: Any) -> None:
        """The session is over (stopped, aborted or failed): say how, when, and rewrite the description."""
        self.ended = time.time()
        self.outcome = outcome
        self._set_phase(phase, **extra)
        self._write_description()

    def _ordered(self, names: Sequence[str], main_last: bool = False) -> tuple[list[str], list[str]]:
        """(first batch, second batch): main sync alone first (or alone last, for a stop)."""
        if not self.main_sync_first or self.main_sync not in names:
            return (list(names), []) if main_last else ([], list(names))
        others = [n for n in names if n != self.main_sync]
        return (others, [self.main_sync]) if main_last else ([self.main_sync], others)

    def _drop(self, names: Sequence[str], step: str, maybe_going: Sequence[str] = ()) -> list[str]:
        dropped = [n for n in names if n in self.participants]
        if dropped:
            self.participants = [n for n in self.participants if n not in dropped]
            self.degraded = True
            self.maybe_going.update(n for n in maybe_going if n in dropped)
            self.journal.write("degraded", step=step, dropped=dropped, participants=self.participants,
                        maybe_going=sorted(self.maybe_going))
            self._emit(Progress(step, None, "note", f"continuing without {names_text(dropped)} (degraded)"))
            self._publish_session()
        return dropped

    async def _apply_policy(self, result: StepResult) -> bool:
        """True to go on. ``continue`` drops the failed rigs; ``rollback`` (or a failed main sync) interrupts."""
        failed = result.failed
        if not failed:
            return True
        partial = self.main_sync not in failed and len(failed) < len(self.participants)
        policy = self.policy
        if partial and self.decide is not None:
            try:
                policy = Policy(str(await self.decide(result)).lower())
            except ValueError:
                log.warning("the partial-failure decision was not a policy; applying %s", self.policy.value)
            self.journal.write("decision", step=result.step, failed=failed, policy=policy.value)
        if policy is Policy.CONTINUE and partial:
            going = [n for n in failed if result.step in ("init", "start") and result.outcomes[n].result == "timeout"]
            result.dropped = self._drop(failed, result.step, maybe_going=going)
            result.warnings.append(f"continuing without {names_text(failed)}")
            return True
        why = f"{result.step} failed on {names_text(failed)}"
        if self.main_sync in failed and self.policy is Policy.CONTINUE:
            why += " (the main-sync rig: cannot continue without it)"
        result.ok = False
        result.error = why
        # interrupt every rig that may have got going: all but those that cleanly refused while still CONNECTED
        targets = [n for n in self.participants
                   if result.outcomes.get(n) is None or result.outcomes[n].ok or result.outcomes[n].result == "timeout"
                   or (self.statuses.get(n) or 0) >= ExpStatus.INITIALIZED]
        self.journal.write("rollback", step=result.step, failed=failed, targets=targets)
        self._emit(Progress(result.step, None, "note", f"rolling back: {why}"))
        result.rollback, result.stood_down = await asyncio.gather(
            self._interrupt_all("rollback", targets, "SessionRollback", why), self._stand_down("rollback"))
        self._warn_stand_down(result)
        self._end(Phase.FAILED, "failed", reason=why)
        return False

    async def _stand_down(self, step: str) -> dict[str, Outcome]:
        """EXPINTERRUPT to the dropped rigs that may be going on their own (:attr:`maybe_going`), so none
        runs on after the session. Sent alongside the step's own messages; a failure is only reported."""
        names = [n for n in sorted(self.maybe_going) if n not in self.participants and n in self.links]
        if not names:
            return {}
        why = (f"dropped from session {self.exp_ref} after it did not answer; stopping whatever it may have "
               "started on its own")
        self.journal.write("note", text=f"standing down {names_text(names)}: they may have got going after being "
                                        "dropped")
        outcomes = await self._interrupt_all(f"{step}: stand down", names, "DroppedFromSession", why)
        self._settle_maybe_going([n for n, o in outcomes.items() if o.ok], "stood down")
        return outcomes

    def _settle_maybe_going(self, names: Sequence[str], why: str) -> None:
        """These dropped rigs are known not to be going any more (journaled, for a console that reattaches)."""
        settled = [n for n in names if n in self.maybe_going]
        if settled:
            self.maybe_going.difference_update(settled)
            self.journal.write("maybe_going", maybe_going=sorted(self.maybe_going), settled=settled, why=why)

    @staticmethod
    def _warn_stand_down(result: StepResult) -> None:
        for name, outcome in result.stood_down.items():
            if not outcome.ok:
                result.warnings.append(f"{name} (dropped earlier) did not confirm standing down: {outcome.describe()}")

    async def _interrupt_all(self, step: str, names: Sequence[str], error: str, message: str) -> dict[str, Outcome]:
        record = {"error": error, "message": message, "traceback": None, "file": None, "line_no": None}
        return await self._fan_out(step, ExpMessage.EXPINTERRUPT, names, lambda n: (record,), ExpStatus.STOPPED)

    def _skip(self, step: str, name: str, event: str, why: str) -> Outcome:
        outcome = Outcome(name, event, "skipped", error=why)
        self.journal.write("skipped", step=step, rig=name, event=event, error=why)
        self._emit(Progress(step, name, "error", why, outcome))
        return outcome

    # ==================================================================== what the monitor tells
    def _init_state(self) -> None:
        self.state.set(["session"], {"rigs": {n: {"main_sync": False, "progress": None} for n in self.rigs}})
        self.monitor.expect(self.rigs, self._expected_status())
        self._publish_session()

    def _on_link(self, name: str, value: str, error: str | None) -> None:
        if name in self.links and not self._closed:
            self.journal.write("link", rig=name, state=value, error=error)
            self._emit(Progress(self.busy or "link", name, "note", f"link {value}" + (f": {error}" if error else "")))

    def _on_status(self, name: str, status: int, source: str) -> None:
        if name not in self.links or self._closed:
            return
        if source in ("poll", "push"):
            self.journal.write("status", rig=name, status=status, source=source)
        self._settle_if_idle(name, status)

    def _on_incident(self, incident: Incident) -> None:
        """Journal each incident with this session's rigs (opening and closing); the description lists them."""
        if incident.rig not in self.links or self._closed:
            return
        self.incidents[incident.id] = incident
        record = incident.to_dict()
        self.journal.write("incident", incident=record.pop("kind"), **record)
        if self.folder is not None:
            self._write_description()

    def _settle_if_idle(self, name: str, status: int) -> None:
        if name in self.maybe_going and status in (ExpStatus.CONNECTED, ExpStatus.STOPPED):
            self._settle_maybe_going([name], f"reports {status_name(status)}")

    def _publish_session(self) -> None:
        self.state.update(["session"], {
            "exp_ref": self.exp_ref, "subject": self.subject, "phase": self.phase.value,
            "started": self.started, "ended": self.ended, "policy": self.policy.value, "degraded": self.degraded,
            "main_sync": self.main_sync, "participants": list(self.participants), "busy": self.busy,
            "outcome": self.outcome, "folder": str(self.folder) if self.folder else None,
            "journal": str(self.journal_path) if self.journal_path else None,
            "actions": sorted(a for a in (ALWAYS | ACTIONS[self.phase])),
        })

    def _set_phase(self, phase: Phase, **extra: Any) -> None:
        self.phase = phase
        self.monitor.expect(self.rigs, self._expected_status())
        self.journal.write("phase", phase=phase.value, degraded=self.degraded, participants=self.participants, **extra)
        self._publish_session()
        self._emit(Progress(self.busy or phase.value, None, "phase", phase.value))

    def _expected_status(self) -> ExpStatus:
        return {Phase.INITIALISED: ExpStatus.INITIALIZED, Phase.RUNNING: ExpStatus.RUNNING,
                Phase.STOPPED: ExpStatus.STOPPED, Phase.FAILED: ExpStatus.STOPPED,
                Phase.ABORTED: ExpStatus.STOPPED}.get(self.phase, ExpStatus.CONNECTED)

    # ==================================================================== journal & description
    def _open_journal(self, kind: str, **extra: Any) -> None:
        assert self.folder is not None
        self.journal.open(self.folder / JOURNAL_NAME, kind, exp_ref=self.exp_ref, subject=self.subject,
                          main_sync=self.main_sync, policy=self.policy.value, participants=self.participants,
                          pid=os.getpid(), rigdeck=version(), rigs={n: self._rig_record(n) for n in self.rigs},
                          **extra)
        self._publish_session()

    def _rig_record(self, name: str) -> dict[str, Any]:
        spec = self.specs.get(name)
        return {"uri": self.links[name].uri, "role": spec.role.value if spec else Role.AUX.value,
                "options": dict(spec.options) if spec else {}}

    def description(self) -> dict[str, Any]:
        """The iblrig-like experiment description of this session, as it stands (secrets redacted)."""
        ref = parse_exp_ref(self.exp_ref) if self.exp_ref else None
        main_desc = self.rig_descriptions.get(self.main_sync or "", {})
        statuses = self.statuses
        rigs = {name: {"uri": self.links[name].uri, "role": self.role(name),
                       "transport": self.links[name].uri.split("://")[0], "participating": name in self.participants,
                       "status": status_name(statuses.get(name)),
                       "experiment_description": redact(self.rig_descriptions.get(name) or {})}
                for name in self.rigs}
        return {
            **self.details,  # first: the experimenter's extras never overwrite what the engine records
            "version": "1.0.0", "exp_ref": self.exp_ref, "subject": self.subject,
            "date": ref.date.isoformat() if ref else None, "number": ref.sequence if ref else None,
            "main_sync": self.main_sync,
            "sync": (main_desc.get("sync") if isinstance(main_desc, dict) else None) or {},
            "rigs": rigs, "policy": self.policy.value, "degraded": self.degraded,
            "start_time": iso(self.started), "end_time": iso(self.ended), "phase": self.phase.value,
            "outcome": self.outcome or ("running" if self.phase is Phase.RUNNING else "pending"),
            "incidents": [i.to_dict() for i in self.incidents.values()],
            "console": {"rigdeck": version(), "pid": os.getpid()},
        }

    def _write_description(self) -> None:
        if self.description_path is not None:
            write_description(self.description_path, self.description())

    def _emit(self, progress: Progress) -> None:
        if progress.rig is not None:
            p = progress
            self.state.set(["session", "rigs", p.rig, "progress"], p.detail if p.kind == "note" else
                           f"{p.step}: {p.detail or p.kind}")
        self._listeners.notify(progress)



__all__ = [
    "ACTIONS", "ALWAYS", "AlyxResult", "FINAL", "Outcome", "Phase", "Policy", "Progress", "REDACTED",
    "Session", "SessionError", "StepResult", "reply_status", "status_name",
]
