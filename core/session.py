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
import datetime as _dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.config import RigSpec, Role
from core.journal import (
    DESCRIPTION_NAME,
    JOURNAL_NAME,
    REDACTED,
    Journal,
    SessionSummary,
    iso,
    redact,
    redact_alyx,
    write_yaml_atomic,
)
from core.link import RemoteError, RigError, RigLink, error_text
from core.listeners import Listeners, Unsubscribe
from core.monitor import (
    DEFAULT_TIMEOUT,
    TIMEOUT_GUARD,
    Incident,
    RigMonitor,
    reply_status,
    spec_seconds,
    status_name,
)
from core.paths import check_subject, next_exp_ref, reserve_session, session_folder
from core.protocol import PROTOCOL_VERSION, ExpMessage, ExpStatus, format_exp_ref, parse_exp_ref
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
from core.version import version

log = logging.getLogger(__name__)

class Session:
    """One multi-rig session over ready links. Create, ``await open()``, step through, ``await close()``.

    ``monitor`` is the :class:`~core.monitor.RigMonitor` of the links (the console's, which outlives the
    session); without one the session makes its own for its lifetime (tests, scripts), polling every
    ``poll_interval`` s when given. The live state is the monitor's.
    """

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
        self.monitor, self._own_monitor = self._monitor_for(monitor, state, poll_interval)
        self.state = self.monitor.state
        self._today = today
        #: what the experimenter typed besides the subject (projects, procedures, notes): into the description
        self.details: dict[str, Any] = {k: v for k, v in (details or {}).items() if v not in (None, "", [])}
        #: asked when some rigs (not all, not the main sync) fail a step; None applies ``policy`` unasked
        self.decide = decide
        roles = [n for n in self.rigs if n in specs and specs[n].role is Role.MAIN_SYNC]
        if main_sync is not None and main_sync not in self.links:
            raise SessionError(f"main-sync rig {main_sync!r} is not one of the rigs: {sorted(self.links)}")
        #: the user's choice (explicit, else the rigs file's role), or None: the rigs decide
        self.main_sync_choice: str | None = main_sync or (roles[0] if roles else None)
        self.main_sync: str | None = None
        self.exp_ref: str | None = None
        self.folder: Path | None = None
        self.journal: Journal | None = None
        self.phase = Phase.IDLE
        self.busy: str | None = None
        self.degraded = False
        self.started: float | None = None
        self.ended: float | None = None
        self.outcome: str | None = None
        self.attached = False
        self.rig_descriptions: dict[str, Any] = {}
        self._listeners: Listeners[[Progress]] = Listeners("progress listener")
        self._pending: list[tuple[str, dict[str, Any], float]] = []
        self._closed = False
        #: rigs dropped after no answer to EXPINIT / EXPSTART: they may have got it all the same and be going
        #: on their own, so a stop or an abort stands them down too (until one reports CONNECTED / STOPPED)
        self.maybe_going: set[str] = set()
        #: the monitor's incidents with this session's rigs while it ran (by id: a closed one replaces its open form)
        self.incidents: dict[int, Incident] = {}
        self._init_state()
        self._unwatch: list[Unsubscribe] = [
            self.monitor.on_link(self._on_link), self.monitor.on_status(self._on_status),
            self.monitor.on_incident(self._on_incident),
        ]
        for incident in self.monitor.open_incidents(self.links):
            self._on_incident(incident)

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
        if self.journal is not None:
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

            def payload(name: str, proposal: str | None = None) -> tuple[Any, ...]:
                claim = choice is not None and name == choice
                info = {
                    "subject": self.subject, "main_sync": claim, "master": claim, "exp_ref": proposal,
                    "experiment_description": {}, "rig_version": f"rigdeck {version()}",
                    "spec_version": PROTOCOL_VERSION,
                }
                if choice is not None and not claim:
                    # RigDeck rig services read this to step down (a bare ``false`` is what iblrig sends
                    # about *itself*, so it cannot mean "not you"); the chosen rig gets ``true`` alone,
                    # so a rig whose own name differs from its rigs-file name is still promoted.
                    info["main_sync_rig"] = choice
                return (int(ExpStatus.CONNECTED), info)

            result.outcomes = await self._fan_out("info", ExpMessage.EXPINFO, self.participants, payload, expect=None)
            answered = {n: o for n, o in result.outcomes.items() if o.ok}
            infos = {n: _first_dict(o.reply) for n, o in answered.items()}
            self.rig_descriptions = {n: info.get("experiment_description") or {} for n, info in infos.items()}
            claimants = [n for n, info in infos.items() if info.get("main_sync") is True or info.get("master") is True]
            failed = result.failed
            if failed and self.policy is Policy.ROLLBACK:
                return self._refuse(result, f"no answer to EXPINFO from {_names(failed)} (policy rollback)")
            if choice is not None:
                if choice in failed:
                    return self._refuse(result, f"the chosen main-sync rig {choice!r} did not answer EXPINFO")
                main = choice
                others = [n for n in claimants if n != choice]
                if others:
                    result.warnings.append(f"{_names(others)} also claim main sync; {choice!r} was chosen")
            elif len(claimants) == 1:
                main = claimants[0]
            elif not claimants:
                return self._refuse(result, f"no rig claims main sync (asked: {_names(self.participants)}); "
                                            "choose one (--main-sync NAME or role: main_sync)")
            else:
                return self._refuse(result, f"several rigs claim main sync: {_names(claimants)}; "
                                            "choose one (--main-sync NAME)")
            offered = infos.get(main, {}).get("exp_ref")
            proposal = self._proposal_if_taken(offered)
            if proposal is not None:
                # The main-sync rig numbered without the sessions this console already filed (another
                # main-sync rig before, another data folder): propose the next free number, once. A RigDeck
                # rig takes it; a rig that insists on its own gets the clear error below.
                result.warnings.append(f"{main} offered exp_ref {offered}, already used here; proposed {proposal}")
                again = await self._fan_out("info", ExpMessage.EXPINFO, [main],
                                            lambda n: payload(n, proposal), expect=None)
                if again[main].ok:
                    offered = _first_dict(again[main].reply).get("exp_ref") or offered
            try:
                exp_ref, folder = self._resolve_exp_ref(offered)
            except ValueError as ex:
                return self._refuse(result, str(ex))
            if failed:
                result.dropped = self._drop(failed, "info")
            self.main_sync, self.exp_ref, self.folder = main, exp_ref, folder
            for name in self.rigs:
                self.state.set(["session", "rigs", name, "main_sync"], name == main)
            self._open_journal("session")
            self._write("main_sync", main_sync=main, chosen=choice is not None, claimants=claimants)
            for warning in result.warnings:
                self._write("note", text=warning)
            self._set_phase(Phase.INFO)
            self._write_description()
            return result

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
            if result.failed:
                result.error = f"{_names(result.failed)} did not confirm the stop"
                self._write("note", text=result.error)
            self.ended = time.time()
            self.outcome = "completed" if result.ok and not self.degraded else "completed_with_errors"
            self._set_phase(Phase.STOPPED)
            self._write_description()
            return result

    async def interrupt(self, message: str = "interrupted by the user", error: str = "Interrupted") -> StepResult:
        """EXPINTERRUPT with an iblrig-style error record to every participant, at once: the session is aborted."""
        async with self._step("interrupt") as result:
            result.outcomes, result.stood_down = await asyncio.gather(
                self._interrupt_all("interrupt", self.participants, error, message), self._stand_down("interrupt"))
            result.ok = not result.failed
            self._warn_stand_down(result)
            if result.failed:
                result.error = f"{_names(result.failed)} did not confirm the interrupt"
            self.ended = time.time()
            self.outcome = "aborted"
            self._set_phase(Phase.ABORTED, reason=message)
            self._write_description()
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
                result.error = f"{_names(result.failed)} did not confirm the cleanup"
            self.state.set(["session", "cleaned"], result.ok)
            self._write("cleanup", ok=result.ok)
            self._sync()
            return result

    async def status(self, names: Iterable[str] | None = None) -> StepResult:
        """EXPSTATUS (with the status the console expects) to the given rigs (default: all session rigs)."""
        targets = list(names) if names is not None else list(self.rigs)
        result = StepResult("status", phase=self.phase)
        mine = int(self._expected_status())
        result.outcomes = await self._fan_out("status", ExpMessage.EXPSTATUS, targets, lambda n: (mine,), expect=None)
        result.ok = not result.failed
        self._sync()
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
                self._write("alyx", source=None, relayed=[])
                self._sync()
                return AlyxResult(None, None, [], {}, outcomes)
            source, base_url, token = holders[0]
            holder_names = {h[0] for h in holders}
            targets = [n for n in targets if n not in holder_names]
        relayed = await self._fan_out("alyx", ExpMessage.ALYX, targets, lambda n: (base_url, token), expect=None)
        self._write("alyx", source=source, base_url=base_url, users=sorted(token), relayed=sorted(relayed))
        self._sync()
        return AlyxResult(source, base_url, sorted(map(str, token)), relayed, outcomes)

    # ==================================================================== step machinery
    class _StepContext:
        def __init__(self, session: Session, action: str) -> None:
            self.session = session
            self.action = action
            self.result = StepResult(action)

        async def __aenter__(self) -> StepResult:
            s = self.session
            if not s.can(self.action):
                why = f"busy with {s.busy}" if s.busy else f"phase is {s.phase.value}"
                raise SessionError(f"cannot {self.action} now: {why}")
            s.busy = self.action
            s.state.set(["session", "busy"], self.action)
            s._emit(Progress(self.action, None, "note", f"{self.action} ..."))
            return self.result

        async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            s = self.session
            s.busy = None
            s.state.set(["session", "busy"], None)
            self.result.phase = s.phase
            if exc_type is asyncio.CancelledError:
                s._write("note", text=f"{self.action} cancelled")
            s._sync()

    def _step(self, action: str) -> Session._StepContext:
        return Session._StepContext(self, action)

    def _refuse(self, result: StepResult, error: str) -> StepResult:
        result.ok = False
        result.error = error
        self._write("refused", step=result.step, error=error)
        self._emit(Progress(result.step, None, "note", error))
        return result

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
            self._write("degraded", step=step, dropped=dropped, participants=self.participants,
                        maybe_going=sorted(self.maybe_going))
            self._emit(Progress(step, None, "note", f"continuing without {_names(dropped)} (degraded)"))
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
            self._write("decision", step=result.step, failed=failed, policy=policy.value)
        if policy is Policy.CONTINUE and partial:
            going = [n for n in failed if result.step in ("init", "start") and result.outcomes[n].result == "timeout"]
            result.dropped = self._drop(failed, result.step, maybe_going=going)
            result.warnings.append(f"continuing without {_names(failed)}")
            return True
        why = f"{result.step} failed on {_names(failed)}"
        if self.main_sync in failed and self.policy is Policy.CONTINUE:
            why += " (the main-sync rig: cannot continue without it)"
        result.ok = False
        result.error = why
        # interrupt every rig that may have got going: all but those that cleanly refused while still CONNECTED
        targets = [n for n in self.participants
                   if result.outcomes.get(n) is None or result.outcomes[n].ok or result.outcomes[n].result == "timeout"
                   or (self.statuses.get(n) or 0) >= ExpStatus.INITIALIZED]
        self._write("rollback", step=result.step, failed=failed, targets=targets)
        self._emit(Progress(result.step, None, "note", f"rolling back: {why}"))
        result.rollback, result.stood_down = await asyncio.gather(
            self._interrupt_all("rollback", targets, "SessionRollback", why), self._stand_down("rollback"))
        self._warn_stand_down(result)
        self.ended = time.time()
        self.outcome = "failed"
        self._set_phase(Phase.FAILED, reason=why)
        self._write_description()
        return False

    async def _stand_down(self, step: str) -> dict[str, Outcome]:
        """EXPINTERRUPT to the dropped rigs that may be going on their own (:attr:`maybe_going`), so none
        runs on after the session. Sent alongside the step's own messages; a failure is only reported."""
        names = [n for n in sorted(self.maybe_going) if n not in self.participants and n in self.links]
        if not names:
            return {}
        why = (f"dropped from session {self.exp_ref} after it did not answer; stopping whatever it may have "
               "started on its own")
        self._write("note", text=f"standing down {_names(names)}: they may have got going after being dropped")
        outcomes = await self._interrupt_all(f"{step}: stand down", names, "DroppedFromSession", why)
        self._settle_maybe_going([n for n, o in outcomes.items() if o.ok], "stood down")
        return outcomes

    def _settle_maybe_going(self, names: Sequence[str], why: str) -> None:
        """These dropped rigs are known not to be going any more (journaled, for a console that reattaches)."""
        settled = [n for n in names if n in self.maybe_going]
        if settled:
            self.maybe_going.difference_update(settled)
            self._write("maybe_going", maybe_going=sorted(self.maybe_going), settled=settled, why=why)

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
        self._write("skipped", step=step, rig=name, event=event, error=why)
        self._emit(Progress(step, name, "error", why, outcome))
        return outcome

    # ==================================================================== the fan-out
    async def _fan_out(
        self, step: str, event: ExpMessage, names: Sequence[str], payload: Callable[[str], tuple[Any, ...]],
        expect: ExpStatus | None,
    ) -> dict[str, Outcome]:
        """Send ``event`` to every named rig at once; one Outcome per rig, never an exception for a rig."""
        for name in names:
            if name not in self.links:
                raise SessionError(f"unknown rig {name!r}; rigs: {sorted(self.links)}")
        if not names:
            return {}
        results = await asyncio.gather(*(self._one(step, name, event, payload(name), expect) for name in names))
        return dict(zip(names, results, strict=True))

    async def _one(
        self, step: str, name: str, event: ExpMessage, data: tuple[Any, ...], expect: ExpStatus | None
    ) -> Outcome:
        link = self.links[name]
        timeout = self.rig_timeout(name)
        shown = redact_alyx(list(data)) if event is ExpMessage.ALYX else list(data)
        self._write("send", step=step, rig=name, event=event.name, data=shown)
        self._emit(Progress(step, name, "sent", event.name))
        heard = "failure"  # what the rig did, for the monitor: reply | report | silence | failure (nothing, our side)
        async with self.monitor.lock(name):
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(timeout + TIMEOUT_GUARD):
                    reply = await link.request(event, *data, timeout=timeout)
            except RemoteError as ex:
                outcome, heard = Outcome(name, event.name, "error", error=ex.text or error_text(ex)), "report"
            except TimeoutError as ex:  # the link's text says more (e.g. "no echo": the rig may not have it)
                outcome = Outcome(name, event.name, "timeout", error=str(ex) or f"no reply within {timeout:g} s")
                heard = "silence"
            except RigError as ex:
                outcome = Outcome(name, event.name, "error", error=str(ex) or error_text(ex))
            except Exception as ex:  # a broken link must not break the session
                log.exception("%s: link raised on %s", name, event.name)
                outcome = Outcome(name, event.name, "error", error=error_text(ex))
            else:
                outcome, heard = self._check_reply(name, event, reply, expect), "reply"
            outcome.rtt_ms = round((time.perf_counter() - t0) * 1e3, 3)
        self._record(step, outcome, event, heard)
        return outcome

    def _check_reply(self, name: str, event: ExpMessage, reply: Any, expect: ExpStatus | None) -> Outcome:
        if not isinstance(reply, list):
            reply = [reply]
        status = reply_status(reply)
        if event is ExpMessage.ALYX:
            status = None
        outcome = Outcome(name, event.name, "reply", reply=reply, status=status)
        if expect is not None:
            if status is None:
                outcome.status = int(expect)  # iblrig-style reply without a status: success means it got there
            elif status != expect and not (event is ExpMessage.EXPINTERRUPT and status == ExpStatus.CONNECTED):
                outcome.result = "error"
                outcome.error = f"rig reports {status_name(status)} after {event.name}, expected {expect.name}"
        return outcome

    def _record(self, step: str, outcome: Outcome, event: ExpMessage, heard: str) -> None:
        """Tell the monitor what the rig did, journal it and report it."""
        name = outcome.rig
        data = _shown(event, outcome.reply)
        if heard == "silence":
            self.monitor.record_silence(name, outcome.error or "no reply", data=data)
        elif heard == "failure":
            self.monitor.record_failure(name, outcome.error or "request failed")
        else:
            self.monitor.record_reply(name, rtt_ms=outcome.rtt_ms, status=outcome.status, data=data,
                                      error=outcome.error, reported=heard == "report")
        if outcome.status is not None:
            self._settle_if_idle(name, outcome.status)
        kind = "reply" if outcome.ok else outcome.result
        self._write(kind, step=step, rig=name, event=outcome.event, status=outcome.status, rtt_ms=outcome.rtt_ms,
                    error=outcome.error, data=data)
        self._emit(Progress(step, name, kind, outcome.describe(), outcome))

    # ==================================================================== what the monitor tells
    def _init_state(self) -> None:
        self.state.set(["session"], {"rigs": {n: {"main_sync": False, "progress": None} for n in self.rigs}})
        self.monitor.expect(self.rigs, self._expected_status())
        self._publish_session()

    def _on_link(self, name: str, value: str, error: str | None) -> None:
        if name in self.links and not self._closed:
            self._write("link", rig=name, state=value, error=error)
            self._emit(Progress(self.busy or "link", name, "note", f"link {value}" + (f": {error}" if error else "")))

    def _on_status(self, name: str, status: int, source: str) -> None:
        if name not in self.links or self._closed:
            return
        if source in ("poll", "push"):
            self._write("status", rig=name, status=status, source=source)
        self._settle_if_idle(name, status)

    def _on_incident(self, incident: Incident) -> None:
        """Journal each incident with this session's rigs (opening and closing); the description lists them."""
        if incident.rig not in self.links or self._closed:
            return
        self.incidents[incident.id] = incident
        record = incident.to_dict()
        self._write("incident", incident=record.pop("kind"), **record)
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
        self._write("phase", phase=phase.value, degraded=self.degraded, participants=self.participants, **extra)
        self._publish_session()
        self._emit(Progress(self.busy or phase.value, None, "phase", phase.value))

    def _expected_status(self) -> ExpStatus:
        return {Phase.INITIALISED: ExpStatus.INITIALIZED, Phase.RUNNING: ExpStatus.RUNNING,
                Phase.STOPPED: ExpStatus.STOPPED, Phase.FAILED: ExpStatus.STOPPED,
                Phase.ABORTED: ExpStatus.STOPPED}.get(self.phase, ExpStatus.CONNECTED)

    # ==================================================================== journal & description
    def _resolve_exp_ref(self, offered: Any) -> tuple[str, Path]:
        assert self.data_dir is not None and self.subject is not None
        if offered:
            ref = parse_exp_ref(offered)
            if ref.subject != self.subject:
                raise ValueError(f"the main-sync rig's exp_ref {format_exp_ref(ref)!r} is for subject "
                                 f"{ref.subject!r}, not {self.subject!r}")
            folder = session_folder(self.data_dir, ref)
            if (folder / JOURNAL_NAME).exists():
                raise ValueError(f"exp_ref {format_exp_ref(ref)} already has a session journal in {folder}")
            folder.mkdir(parents=True, exist_ok=True)
            return format_exp_ref(ref), folder
        ref, folder = reserve_session(self.data_dir, self.subject, self._today())
        return format_exp_ref(ref), folder

    def _proposal_if_taken(self, offered: Any) -> str | None:
        """The next free exp_ref here when the main-sync rig offered one this console already has a journal for."""
        assert self.data_dir is not None and self.subject is not None
        try:
            ref = parse_exp_ref(offered) if offered else None
        except ValueError:
            return None  # _resolve_exp_ref says what is wrong with it
        if ref is None or ref.subject != self.subject:
            return None
        if not (session_folder(self.data_dir, ref) / JOURNAL_NAME).exists():
            return None
        return format_exp_ref(next_exp_ref(self.data_dir, self.subject, ref.date))

    def _open_journal(self, kind: str, **extra: Any) -> None:
        assert self.folder is not None
        self.journal = Journal(self.folder / JOURNAL_NAME)
        self._write(kind, exp_ref=self.exp_ref, subject=self.subject, main_sync=self.main_sync,
                    policy=self.policy.value, participants=self.participants, pid=os.getpid(),
                    rigdeck=version(), rigs={n: self._rig_record(n) for n in self.rigs}, **extra)
        for pending_kind, fields, at in self._pending:
            self.journal.write(pending_kind, at=round(at, 6), **fields)
        self._pending.clear()
        self._publish_session()

    def _rig_record(self, name: str) -> dict[str, Any]:
        spec = self.specs.get(name)
        link = self.links[name]
        options = dict(spec.options) if spec else {}
        role = spec.role.value if spec else Role.AUX.value
        return {"uri": link.uri, "role": role, "options": options}

    def _write(self, kind: str, **fields: Any) -> None:
        if self.journal is not None and not self.journal.closed:
            try:
                self.journal.write(kind, **fields)
            except OSError as ex:  # a full disk must not hide the rigs' state from the user
                log.error("cannot write the journal %s: %s", self.journal.path, ex)
        elif self.journal is None:
            self._pending.append((kind, fields, time.time()))

    def _sync(self) -> None:
        if self.journal is not None:
            try:
                self.journal.sync()
            except OSError as ex:
                log.error("cannot fsync the journal %s: %s", self.journal.path, ex)

    def description(self) -> dict[str, Any]:
        """The iblrig-like experiment description of this session, as it stands."""
        ref = parse_exp_ref(self.exp_ref) if self.exp_ref else None
        main_desc = self.rig_descriptions.get(self.main_sync or "", {})
        return {
            **self.details,  # first: the experimenter's extras never overwrite what the engine records
            "version": "1.0.0",
            "exp_ref": self.exp_ref,
            "subject": self.subject,
            "date": ref.date.isoformat() if ref else None,
            "number": ref.sequence if ref else None,
            "main_sync": self.main_sync,
            "sync": (main_desc.get("sync") if isinstance(main_desc, dict) else None) or {},
            "rigs": {
                name: {
                    "uri": self.links[name].uri,
                    "role": self.role(name),
                    "transport": self.links[name].uri.split("://")[0],
                    "participating": name in self.participants,
                    "status": status_name(self.statuses.get(name)),
                    "experiment_description": redact(self.rig_descriptions.get(name) or {}),
                }
                for name in self.rigs
            },
            "policy": self.policy.value,
            "degraded": self.degraded,
            "start_time": iso(self.started),
            "end_time": iso(self.ended),
            "phase": self.phase.value,
            "outcome": self.outcome or ("running" if self.phase is Phase.RUNNING else "pending"),
            "incidents": [i.to_dict() for i in self.incidents.values()],
            "console": {"rigdeck": version(), "pid": os.getpid()},
        }

    def _write_description(self) -> None:
        if self.description_path is None:
            return
        try:
            write_yaml_atomic(self.description_path, self.description())
        except OSError as ex:
            log.error("cannot write %s: %s", self.description_path, ex)

    def _emit(self, progress: Progress) -> None:
        if progress.rig is not None:
            p = progress
            self.state.set(["session", "rigs", p.rig, "progress"], p.detail if p.kind == "note" else
                           f"{p.step}: {p.detail or p.kind}")
        self._listeners.notify(progress)


# ------------------------------------------------------------------------------------------ helpers

def _first_dict(reply: Any) -> dict[str, Any]:
    for item in reply or []:
        if isinstance(item, dict):
            return item
    return {}


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _shown(event: ExpMessage, reply: Any) -> Any:
    if reply is None:
        return None
    return redact_alyx(reply) if event is ExpMessage.ALYX else redact(reply)


__all__ = [
    "ACTIONS", "ALWAYS", "AlyxResult", "FINAL", "Outcome", "Phase", "Policy", "Progress", "REDACTED",
    "Session", "SessionError", "StepResult", "reply_status", "status_name",
]
