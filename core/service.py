"""The rig service: one rig's side of a session, transport-agnostic (every server adapts wire <-> this).

:class:`RigService` implements :class:`core.link.MessageHandler`. It runs the ExpStatus state machine
over the rig's drivers::

    CONNECTED --EXPINIT--> INITIALIZED --EXPSTART--> RUNNING --EXPEND/EXPINTERRUPT--> STOPPED
        ^                                                                               |
        +------------------------------- EXPCLEANUP ------------------------------------+
    (STOPPED --EXPINIT(new ref)--> INITIALIZED too: iblrig never sends EXPCLEANUP)

Rules that make it safe on a lossy network and with impatient consoles:

- EXPINIT / EXPSTART / EXPEND are idempotent for the same exp_ref: a repeat is answered with the
  current state and never starts (or stops) anything twice. Session messages are serialised by a
  lock, so a duplicate that arrives while the first is still starting recorders waits and then sees
  the result instead of racing it.
- A command that makes no sense in the current state raises :class:`OutOfOrder` with a message that
  says what the rig is doing and what to send first; the transport answers it as an iblutil error
  report ``[0, "OutOfOrder: ...", event]``.
- Replies have iblutil's shapes (see the module constants and the handlers), so an unmodified iblrig
  behaviour PC drives a RigDeck rig.
- Alyx tokens are kept, relayed on request, and never logged or published in the live state. The token
  goes only to the peers ``alyx.allow`` names (by default this machine and the host of the console that
  sent this session's EXPINIT/EXPSTART: :mod:`core.alyx_access`); others get an ``AlyxRefused`` error.

The rig's published live state (``self.state``): ``name``, ``status``, ``exp_ref``, ``main_sync``,
``session_dir``, ``recorders/<name>/{kind, rate, frames, path, running, error}``,
``manipulators/<id>/{x, y, z, w, moving, inside_brain}``, ``alyx/{base_url, user, has_token}``,
``last_command/{event, peer, time}``, ``last_error``, ``restarted/{exp_ref, ended_at, text, recordings}``,
``fault`` and ``drivers/<name>/{alive, last_activity, last_error, ...}`` (every driver's health, see
:mod:`core.drivers.base`).

Drivers: recorders start at EXPSTART, external programs (``drivers.commands``) at EXPSTART or EXPINIT;
EXPEND/EXPINTERRUPT stop both (programs in parallel, each with its own grace). A driver that fails
mid-session never stops the rig: :meth:`RigService._on_fault` sets ``fault``, the next EXPSTATUS is
answered with a :class:`DriverFault` error report naming the driver and its last words, and the
stop that ends the session clears it (its reply lists ``errors``). ``docs/drivers.md`` is the contract.

A rig killed while recording finds, when it starts again, the files its previous run left open: it closes
them as truncated and tells the console that comes to stop that session (:mod:`core.unfinished`).

Each session command the rig runs (EXPINIT, EXPSTART, EXPEND, EXPINTERRUPT, repeats included) is recorded
in the session folder, one JSON line each in :data:`COMMANDS_FILE`: what the rig itself did and for whom,
next to the data (a console's journal says what it asked; this says what arrived and ran, once or twice).

EXPINFO extension for RigDeck consoles: ``main_sync_rig: NAME`` in the info dict makes the rig called
NAME main sync for this session and every other rig not (``main_sync: true`` alone promotes the rig it
is sent to; ``main_sync: false`` does not demote, because iblrig sends it to describe *itself*).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.alyx_access import AlyxAccess, AlyxRefused
from core.drivers.base import DriverContext, DriverError, SessionInfo, health
from core.drivers.command import CommandDriver
from core.drivers.kinds import find_kind
from core.drivers.main_sync import MainSync
from core.drivers.recorder import KINDS, Recorder, SimulatedRecorder
from core.link import error_text
from core.paths import default_data_dir, session_folder
from core.peers import Address, address, peer_host
from core.protocol import PROTOCOL_VERSION, ExpMessage, ExpStatus, format_exp_ref, parse_exp_ref
from core.rig_config import RecorderSpec, RigConfig
from core.state import LiveState
from core.unfinished import RigRestart, UnfinishedRecordings
from core.version import version

log = logging.getLogger(__name__)

#: seconds between two publications of a busy driver's health (frames, output lines)
DRIVER_PUBLISH_PERIOD = 0.2

SESSION_EVENTS = frozenset({ExpMessage.EXPINFO, ExpMessage.EXPINIT, ExpMessage.EXPSTART, ExpMessage.EXPEND,
                            ExpMessage.EXPINTERRUPT, ExpMessage.EXPCLEANUP})
#: the session commands the rig records in the session folder, and the file they go to
RECORDED_EVENTS = frozenset({ExpMessage.EXPINIT, ExpMessage.EXPSTART, ExpMessage.EXPEND, ExpMessage.EXPINTERRUPT})
COMMANDS_FILE = "_rigdeck_rig_commands.jsonl"


class ServiceError(RuntimeError):
    """A message the rig cannot act on (bad data); the transport sends the error report."""


class OutOfOrder(ServiceError):
    """A command the current ExpStatus does not allow (EXPSTART before EXPINIT, ...)."""


class DriverFault(ServiceError):
    """A driver failed mid-session (a program exited, a camera stopped): EXPSTATUS answers with this."""


class RigRestarted(ServiceError):
    """This rig died while running a session and was started again: its recordings ended early."""


class InjectedFailure(ServiceError):
    """The rig file's ``fail_on`` hook: fail on purpose, for partial-failure tests."""


def _first(data: list[Any], default: Any = None) -> Any:
    return data[0] if data else default


def _ref_from(value: Any, what: str) -> str | None:
    """An exp_ref from whatever a client put in a message (str, {date, sequence, subject}, {exp_ref: ...})."""
    if value is None:
        return None
    if isinstance(value, Mapping) and "exp_ref" in value:
        value = value["exp_ref"]
        if value is None:
            return None
    try:
        return format_exp_ref(value)
    except ValueError as ex:
        raise ServiceError(f"{what}: {ex}") from None


class RigService:
    """One rig: the state machine, its drivers and its live state (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        main_sync: bool = False,
        recorders: Mapping[str, Recorder] | None = None,
        manipulator: Any = None,
        commands: Mapping[str, CommandDriver] | None = None,
        alyx: Mapping[str, Any] | None = None,
        fail_on: frozenset[str] | set[str] = frozenset(),
        delay_on: Mapping[str, float] | None = None,
        description: str = "",
        today: Callable[[], _dt.date] = _dt.date.today,
    ) -> None:
        self.name = name
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.configured_main_sync = bool(main_sync)
        self._session_main_sync: bool | None = None  # a console's choice for this session
        self.recorders: dict[str, Recorder] = dict(recorders or {})
        self.commands: dict[str, CommandDriver] = dict(commands or {})
        self.manipulator = manipulator
        self.fault: str | None = None  # a driver failure of this session, until the session stops
        self._manipulator_health: dict[str, Any] = health(False, None, None, type="manipulator")
        self._dirty_drivers: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self.fail_on = frozenset(fail_on)
        self.delay_on = dict(delay_on or {})
        self.description = description
        self.main_sync_driver = MainSync(self.data_dir, today=today)
        self._today = today
        self.status = ExpStatus.CONNECTED
        self.exp_ref: str | None = None
        self.session_dir: Path | None = None
        self._pending: tuple[str, _dt.date, str] | None = None  # main sync: (subject, day, exp_ref) handed out
        self._alyx: dict[str, Any] | None = None
        if alyx and alyx.get("token"):
            self._alyx = {"base_url": alyx["base_url"], "user": alyx["user"], "token": {"token": alyx["token"]}}
        self.alyx_access = AlyxAccess((alyx or {}).get("allow"))
        self._consoles: tuple[str | None, set[Address]] = (None, set())  # (exp_ref, hosts that init/start it)
        self.unfinished = UnfinishedRecordings(self.data_dir, name)
        #: the session a previous run of this rig died in (told to the console that comes to stop it)
        self.restart: RigRestart | None = None
        self._lock = asyncio.Lock()
        self._commands_run = itertools.count(1)  # numbers the recorded commands, in the order they ran
        self._unsubscribe: list[Callable[[], None]] = []
        self._started = False
        self._closed = False
        self.version = version()
        self.state = LiveState({
            "name": name,
            "status": int(self.status),
            "exp_ref": None,
            "main_sync": self.main_sync,
            "session_dir": None,
            "recorders": {n: r.describe() for n, r in self.recorders.items()},
            "manipulators": {},
            "alyx": self._alyx_public(),
            "last_command": None,
            "last_error": None,
            "fault": None,
            "drivers": {},
        })
        for name, driver in self._drivers().items():
            self.state.set(["drivers", name], self._health_of(name, driver))
        for recorder in self.recorders.values():
            self._unsubscribe.append(recorder.subscribe(self._on_frames))
            recorder.on_fault(self._on_fault)
        for command in self.commands.values():
            command.on_fault(self._on_fault)
            command.on_change(self._touch_driver)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: RigConfig, manipulator: Any = None, **kwargs: Any) -> RigService:
        """Build the rig a rig file describes (pass ``manipulator`` for one built outside core, e.g. a proxy)."""
        recorders: dict[str, Recorder] = {spec.name: build_recorder(spec, config) for spec in config.recorders}
        commands = {spec.name: CommandDriver(spec, config.name) for spec in config.commands}
        if manipulator is None and config.manipulator is not None:
            manipulator = build_manipulator(config.manipulator, config.source, config.driver_context())
        return cls(config.name, data_dir=config.data_dir, main_sync=config.main_sync, recorders=recorders,
                   manipulator=manipulator, commands=commands, alyx=config.alyx, fail_on=config.fail_on,
                   delay_on=config.delay_on, description=config.description, **kwargs)

    # ------------------------------------------------------------------ lifecycle
    @property
    def main_sync(self) -> bool:
        """Main sync for the current session: the console's choice if it made one, else the rig file's."""
        return self.configured_main_sync if self._session_main_sync is None else self._session_main_sync

    async def start(self) -> None:
        """Hook drivers to the live state (call once, from the loop that will serve the rig)."""
        if self._started:
            return
        self._started = True
        self.restart = self.unfinished.recover()
        if self.restart is not None:
            self.state.set(["restarted"], self.restart.as_dict())
        if self.manipulator is not None:
            try:
                for manipulator_id in await self.manipulator.list_ids():
                    pos = await self.manipulator.position(manipulator_id)
                    self._on_position(manipulator_id, pos, self.manipulator.is_moving(manipulator_id))
                self._manipulator_health.update(alive=True, last_error=None)
            except Exception as ex:  # a stage that is off must not keep the rest of the rig from serving
                self._manipulator_health.update(alive=False, last_error=f"manipulator not answering: {error_text(ex)}")
                log.error("rig %s: %s", self.name, self._manipulator_health["last_error"])
            self._unsubscribe.append(self.manipulator.subscribe(self._on_position))
            self._publish_driver("manipulator")

    async def close(self) -> None:
        """Stop recorders (files get their footer) and release drivers. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        await self._stop_programs()
        await self._stop_recorders()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.manipulator is not None:
            try:
                await self.manipulator.stop_all()
                await self.manipulator.close()
            except Exception:
                log.exception("rig %s: closing the manipulator failed", self.name)

    # ------------------------------------------------------------------ live state feeds
    def _drivers(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.recorders, **self.commands}
        if self.manipulator is not None:
            out["manipulator"] = self.manipulator
        return out

    def _health_of(self, name: str, driver: Any) -> dict[str, Any]:
        if driver is self.manipulator:
            return dict(self._manipulator_health)
        try:
            return driver.health()
        except Exception as ex:  # a plugin's bug shows as its health, never as a broken rig
            return health(False, None, f"health() failed: {error_text(ex)}")

    def _publish_driver(self, name: str) -> None:
        driver = self._drivers().get(name)
        if driver is not None:
            self.state.set(["drivers", name], self._health_of(name, driver))

    def _touch_driver(self, name: str) -> None:
        """A driver changed (a frame, a line of output): republish its health, at most 5 times a second."""
        self._dirty_drivers.add(name)
        if self._flush_handle is None and not self._closed:
            try:
                self._flush_handle = asyncio.get_running_loop().call_later(DRIVER_PUBLISH_PERIOD, self._flush_drivers)
            except RuntimeError:  # no loop (a synchronous caller): publish now
                self._flush_drivers()

    def _flush_drivers(self) -> None:
        self._flush_handle = None
        dirty, self._dirty_drivers = self._dirty_drivers, set()
        for name in sorted(dirty):
            self._publish_driver(name)

    def _on_fault(self, name: str, text: str) -> None:
        """A driver failed mid-session: the rig keeps serving, its status carries the error until the stop."""
        self._publish_driver(name)
        if self.status not in (ExpStatus.INITIALIZED, ExpStatus.RUNNING):
            return
        message = f"driver {name} failed: {text}"
        if self.fault is None:
            self.fault = message
        log.error("rig %s: %s", self.name, message)
        self.state.update([], {"fault": self.fault, "last_error": message})

    def _on_frames(self, name: str, frames: int) -> None:
        recorder = self.recorders.get(name)
        if recorder is not None:
            self.state.update(["recorders", name], recorder.describe())
            self._touch_driver(name)

    def _on_position(self, manipulator_id: str, pos: Any, moving: bool) -> None:
        values = dict(pos.as_dict()) if hasattr(pos, "as_dict") else dict(pos)
        values["moving"] = bool(moving)
        try:
            values["inside_brain"] = bool(self.manipulator.is_inside_brain(manipulator_id))
        except Exception:
            values["inside_brain"] = False
        self.state.update(["manipulators", str(manipulator_id)], values)
        self._manipulator_health["last_activity"] = round(time.time(), 3)
        self._touch_driver("manipulator")

    def _alyx_public(self) -> dict[str, Any] | None:
        if self._alyx is None:
            return None
        return {"base_url": self._alyx["base_url"], "user": self._alyx["user"], "has_token": True}

    def _set_status(self, status: ExpStatus) -> None:
        self.status = status
        self.state.update([], {"status": int(status), "exp_ref": self.exp_ref, "main_sync": self.main_sync,
                               "session_dir": str(self.session_dir) if self.session_dir else None})

    # ------------------------------------------------------------------ the handler
    async def handle(self, event: ExpMessage, data: list[Any], peer: str) -> list[Any]:
        """Answer one message (MessageHandler). Raises for error reports (the transport sends them)."""
        event = ExpMessage.validate(event, allow_bitwise=False)
        data = list(data) if isinstance(data, list | tuple) else [data]
        name = event.name or str(int(event))
        if event is not ExpMessage.ALYX:  # ALYX data carries a token: never log it
            log.info("rig %s: %s from %s: %s", self.name, name, peer, _short(data))
        else:
            log.info("rig %s: ALYX from %s", self.name, peer)
        if event is not ExpMessage.EXPSTATUS:
            self.state.set(["last_command"], {"event": name, "peer": str(peer), "time": time.time()})
        delay = self.delay_on.get(name)
        if delay:
            await asyncio.sleep(delay)
        try:
            if name in self.fail_on:
                raise InjectedFailure(f"rig {self.name} is set to fail on {name} (fail_on in its rig file)")
            handler = getattr(self, f"_on_{name.lower()}")
            if event in SESSION_EVENTS:
                async with self._lock:
                    reply = await handler(data, peer)
                    if event in RECORDED_EVENTS:
                        self._record(name, peer)
                    if event in (ExpMessage.EXPINIT, ExpMessage.EXPSTART):
                        self._note_console(peer)
                    if event in (ExpMessage.EXPINIT, ExpMessage.EXPCLEANUP):
                        self.restart = None  # a new session, or the old one put away: the news is old
                    return reply
            return await handler(data, peer)
        except Exception as ex:
            text = error_text(ex)
            self.state.set(["last_error"], text)
            log.warning("rig %s: %s from %s refused: %s", self.name, name, peer, text)
            raise

    # EXPINFO [status, {subject, main_sync, exp_ref, ...}] -> [status, {exp_ref, main_sync, ...}]
    async def _on_expinfo(self, data: list[Any], peer: str) -> list[Any]:
        info = data[1] if len(data) > 1 else (data[0] if data and isinstance(data[0], Mapping) else None)
        info = dict(info) if isinstance(info, Mapping) else {}
        in_session = self.status in (ExpStatus.INITIALIZED, ExpStatus.RUNNING)
        if not in_session:
            if info.get("main_sync_rig") is not None:
                self._session_main_sync = str(info["main_sync_rig"]) == self.name
            elif info.get("main_sync") is True:
                self._session_main_sync = True
        exp_ref = self.exp_ref if (in_session or self.status is ExpStatus.STOPPED) else None
        subject = info.get("subject")
        if self.main_sync and not in_session and isinstance(subject, str) and subject.strip():
            exp_ref = self._main_sync_ref(subject.strip(), _ref_from(info.get("exp_ref"), "EXPINFO exp_ref"))
        self.state.set(["main_sync"], self.main_sync)
        reply = {
            "exp_ref": exp_ref,
            "main_sync": self.main_sync,
            "master": self.main_sync,  # iblrig < 8 read this name
            "experiment_description": self.experiment_description(),
            "rig": self.name,
            "rig_version": f"rigdeck {self.version}",
            "spec_version": PROTOCOL_VERSION,
            "api_version": PROTOCOL_VERSION,
            "status": int(self.status),
            "recorders": sorted(self.recorders),
            "programs": sorted(self.commands),
            "fault": self.fault,
        }
        if subject is not None:
            reply["subject"] = subject
        return [int(self.status), reply]

    def _main_sync_ref(self, subject: str, proposed: str | None) -> str:
        """The exp_ref this main-sync rig hands out: the console's if it proposed one, else reserved here."""
        today = self._today()
        if proposed is not None:
            ref = parse_exp_ref(proposed)
            if ref.subject != subject:
                raise ServiceError(f"EXPINFO: exp_ref {proposed} is not for subject {subject!r}")
            self._pending = (subject, ref.date, proposed)
            return proposed
        if self._pending is not None and self._pending[:2] == (subject, today) and self._pending[2] != self.exp_ref:
            return self._pending[2]  # a repeated EXPINFO gets the same reference, not a new number
        ref = format_exp_ref(self.main_sync_driver.allocate(subject, today))
        self._pending = (subject, today, ref)
        log.info("rig %s (main sync): exp_ref %s for %s", self.name, ref, subject)
        return ref

    def experiment_description(self) -> dict[str, Any]:
        """This rig's part of the iblrig-like experiment description (devices and sync)."""
        devices: dict[str, dict[str, Any]] = {}
        group = {"camera": "cameras", "video": "cameras", "ephys": "neuropixel", "microphone": "microphone"}
        for rname, recorder in self.recorders.items():
            collection = KINDS.get(recorder.kind, {}).get("collection", getattr(recorder, "collection", "raw_data"))
            entry: dict[str, Any] = {"collection": collection, "rig": self.name}
            if getattr(recorder, "rate", None):
                entry["rate"] = recorder.rate  # type: ignore[attr-defined]
            devices.setdefault(group.get(recorder.kind, recorder.kind), {})[rname] = entry
        if self.manipulator is not None:
            devices["manipulators"] = {self.name: {"rig": self.name}}
        out: dict[str, Any] = {}
        if devices:
            out["devices"] = devices
        if self.main_sync:
            out["sync"] = {"rigdeck": {"rig": self.name, "collection": "raw_sync_data"}}
        return out

    # EXPINIT [{"exp_ref": ...}] -> [{"status": 10, "exp_ref": ...}]
    async def _on_expinit(self, data: list[Any], peer: str) -> list[Any]:
        ref = _ref_from(_first(data), "EXPINIT exp_ref")
        if ref is None:
            if self.main_sync and self._pending is not None:
                ref = self._pending[2]
            else:
                raise ServiceError(f"EXPINIT needs an exp_ref ({{\"exp_ref\": \"YYYY-MM-DD_N_subject\"}}); "
                                   f"rig {self.name} has none to use")
        if ref == self.exp_ref and self.status is not ExpStatus.CONNECTED:
            return [{"status": int(self.status), "exp_ref": ref}]  # a repeat: nothing happens twice
        if self.status is ExpStatus.RUNNING:
            raise OutOfOrder(f"rig {self.name} is RUNNING session {self.exp_ref}; "
                             f"send EXPEND before EXPINIT {ref}")
        folder = session_folder(self.data_dir, ref)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise ServiceError(f"rig {self.name}: cannot create session folder {folder}: {ex}") from None
        await self._stop_programs()  # an initialized session replaced by another: its programs end first
        self.exp_ref, self.session_dir = ref, folder
        self._clear_fault()
        for recorder in self.recorders.values():  # a new session: counters start again
            self.state.update(["recorders", recorder.name], {"frames": 0, "path": None})
        await self._start_programs("EXPINIT")
        self._set_status(ExpStatus.INITIALIZED)
        return [{"status": int(self.status), "exp_ref": ref}]

    # EXPSTART [exp_ref, data] -> [exp_ref, {"status": 20}]
    async def _on_expstart(self, data: list[Any], peer: str) -> list[Any]:
        ref = _ref_from(_first(data), "EXPSTART exp_ref") or self.exp_ref
        if self.status is ExpStatus.CONNECTED:
            raise OutOfOrder(f"EXPSTART before EXPINIT: rig {self.name} has no initialized session; "
                             "send EXPINIT first")
        if ref != self.exp_ref:
            raise OutOfOrder(f"EXPSTART for {ref}, but rig {self.name} is {self.status.name} "
                             f"with session {self.exp_ref}")
        if self.status is ExpStatus.RUNNING:
            return [ref, {"status": int(self.status)}]  # a repeat: recorders are not started twice
        if self.status is ExpStatus.STOPPED:
            raise OutOfOrder(f"session {ref} already stopped on rig {self.name}; EXPINIT a new session to record")
        assert self.session_dir is not None
        started: list[Recorder] = []
        try:
            for recorder in self.recorders.values():
                await recorder.start(self.session_dir, ref)
                started.append(recorder)
        except Exception as ex:
            for recorder in started:
                await recorder.stop()
            for recorder in self.recorders.values():
                self._publish_driver(recorder.name)
            raise ServiceError(f"rig {self.name} could not start recording: {error_text(ex)}") from ex
        try:
            await self._start_programs("EXPSTART")
        except ServiceError:
            for recorder in started:
                await recorder.stop()
            raise
        self.unfinished.mark(ref, [r.path for r in started if r.path is not None])
        if self.main_sync:
            self.main_sync_driver.clock.start()
        self._set_status(ExpStatus.RUNNING)
        return [ref, {"status": int(self.status)}]

    # EXPEND [data] -> [{"status": 30}]
    async def _on_expend(self, data: list[Any], peer: str) -> list[Any]:
        if self.status is ExpStatus.CONNECTED:
            if self.restart is not None:
                raise RigRestarted(self.restart.text())
            raise OutOfOrder(f"EXPEND with no session: rig {self.name} is CONNECTED")
        if self.status is not ExpStatus.STOPPED:  # a repeat finds it STOPPED and changes nothing
            await self._finish()
        reply: dict[str, Any] = {"status": int(self.status), "exp_ref": self.exp_ref,
                                 "recorders": self._recordings()}
        if self.commands:
            reply["programs"] = {name: command.report() for name, command in self.commands.items()}
        errors = {name: err for name, err in self._driver_errors().items() if err}
        if errors:
            reply["errors"] = errors
        return [reply]

    # EXPINTERRUPT [data] -> [{"status": 30}] (forgiving: whatever the state, nothing keeps recording)
    async def _on_expinterrupt(self, data: list[Any], peer: str) -> list[Any]:
        if self.status in (ExpStatus.INITIALIZED, ExpStatus.RUNNING):
            await self._finish()
            self.state.set(["interrupted"], {"exp_ref": self.exp_ref, "peer": str(peer), "time": time.time()})
        if self.status is ExpStatus.CONNECTED and self.restart is not None:
            return [{"status": int(self.status), "exp_ref": self.restart.exp_ref, "restarted": self.restart.text()}]
        return [{"status": int(self.status), "exp_ref": self.exp_ref}]

    # EXPCLEANUP [data] -> [{"status": 0}]
    async def _on_expcleanup(self, data: list[Any], peer: str) -> list[Any]:
        if self.status is ExpStatus.RUNNING:
            raise OutOfOrder(f"EXPCLEANUP while rig {self.name} is RUNNING {self.exp_ref}; send EXPEND first")
        await self._stop_programs()
        self._clear_fault()
        self.exp_ref, self.session_dir = None, None
        self._session_main_sync, self._pending = None, None
        self._set_status(ExpStatus.CONNECTED)
        return [{"status": int(self.status)}]

    # EXPSTATUS [status] -> [status]
    async def _on_expstatus(self, data: list[Any], peer: str) -> list[Any]:
        if self.fault is not None:  # the console's next poll hears it as an error report, in plain words
            raise DriverFault(f"rig {self.name} is {self.status.name} with an error: {self.fault}")
        return [int(self.status)]

    # ALYX [base_url | None, {user: {token}} | {}] -> [base_url, {user: {token}}] | [None, {}]
    async def _on_alyx(self, data: list[Any], peer: str) -> list[Any]:
        base_url = _first(data)
        tokens = data[1] if len(data) > 1 else {}
        if tokens:
            if not isinstance(tokens, Mapping) or len(tokens) != 1:
                raise ServiceError("ALYX token must be {user: {\"token\": ...}} with one user")
            ((user, token),) = tokens.items()
            if not isinstance(user, str) or not isinstance(token, Mapping | str):
                raise ServiceError("ALYX token must be {user: {\"token\": ...}} with one user")
            if not isinstance(base_url, str):
                raise ServiceError("ALYX: a token needs the Alyx base URL")
            self._alyx = {"base_url": base_url, "user": user,
                          "token": dict(token) if isinstance(token, Mapping) else {"token": token}}
            self.state.set(["alyx"], self._alyx_public())
            log.info("rig %s: Alyx token for user %s at %s received (not shown)", self.name, user, base_url)
            return [base_url, {}]
        refusal = self.alyx_access.refusal(peer, self._session_consoles())
        if refusal is not None:
            raise AlyxRefused(f"rig {self.name} does not hand its Alyx token to {peer}: {refusal}")
        if self._alyx is None:
            return [None, {}]
        return [self._alyx["base_url"], {self._alyx["user"]: dict(self._alyx["token"])}]

    def _note_console(self, peer: str) -> None:
        """Remember the host that runs this session (it may have the Alyx token: ``session`` in alyx.allow)."""
        ref, hosts = self._consoles
        if ref != self.exp_ref:
            ref, hosts = self.exp_ref, set()
        host = address(peer_host(peer) or "")
        if host is not None:
            hosts.add(host)
        self._consoles = (ref, hosts)

    def _session_consoles(self) -> set[Address]:
        ref, hosts = self._consoles
        in_session = self.exp_ref is not None and ref == self.exp_ref and self.status is not ExpStatus.CONNECTED
        return hosts if in_session else set()

    # ------------------------------------------------------------------ helpers
    def _record(self, name: str, peer: str) -> None:
        """One line in the session folder's command record (a failure to write it is logged, not fatal:
        the command has run)."""
        if self.session_dir is None:
            return
        line = {"n": next(self._commands_run), "time": time.time(), "event": name, "peer": str(peer),
                "exp_ref": self.exp_ref, "status": int(self.status)}
        try:
            with open(self.session_dir / COMMANDS_FILE, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        except OSError as ex:
            log.warning("rig %s: cannot record %s in %s: %s", self.name, name, self.session_dir, ex)

    async def _finish(self) -> None:
        await self._stop_programs()
        await self._stop_recorders()
        self._clear_fault()
        self.main_sync_driver.clock.reset()
        if self._pending is not None and self._pending[2] == self.exp_ref:
            self._pending = None
        self._set_status(ExpStatus.STOPPED)

    async def _stop_recorders(self) -> None:
        for recorder in self.recorders.values():
            if recorder.running:
                try:
                    await recorder.stop()
                except Exception as ex:
                    log.error("rig %s: stopping recorder %s failed: %s", self.name, recorder.name, error_text(ex))
            self.state.update(["recorders", recorder.name], recorder.describe())
            self._publish_driver(recorder.name)
        self.unfinished.clear()

    def _clear_fault(self) -> None:
        self.fault = None
        self.state.set(["fault"], None)

    def _session_info(self) -> SessionInfo:
        assert self.exp_ref is not None and self.session_dir is not None
        return SessionInfo(self.exp_ref, self.session_dir, self.name)

    async def _start_programs(self, event: str) -> None:
        """Start the programs due at ``event``; if one cannot start, stop the ones just started and refuse."""
        started: list[CommandDriver] = []
        for command in self.commands.values():
            if command.start_on != event:
                continue
            try:
                await command.start(self._session_info())
            except DriverError as ex:
                self._publish_driver(command.name)
                for other in started:
                    await other.stop()
                    self._publish_driver(other.name)
                raise ServiceError(f"rig {self.name} could not start program {command.name}: {ex}") from None
            started.append(command)
            self._publish_driver(command.name)

    async def _stop_programs(self) -> None:
        """Stop every running program, all at once (each may take its grace period)."""
        running = [c for c in self.commands.values() if c.running]
        results = await asyncio.gather(*(c.stop() for c in running), return_exceptions=True)
        for command, result in zip(running, results, strict=True):
            if isinstance(result, BaseException):
                log.error("rig %s: stopping program %s failed: %s", self.name, command.name, error_text(result))
            self._publish_driver(command.name)

    def _driver_errors(self) -> dict[str, str | None]:
        return {name: self._health_of(name, d).get("last_error") for name, d in self._drivers().items()}

    def _recordings(self) -> dict[str, Any]:
        return {name: {"path": str(r.path) if r.path else None, "frames": r.frames}
                for name, r in self.recorders.items()}


def _short(data: Any, limit: int = 200) -> str:
    text = repr(data)
    return text if len(text) <= limit else text[:limit] + "..."


def build_recorder(spec: RecorderSpec, config: RigConfig) -> Recorder:
    """A recorder for one validated ``drivers.recorders`` entry: simulated, video, or a plugin's kind."""
    from core.config import ConfigError

    if spec.kind in KINDS:
        return SimulatedRecorder(spec.name, spec.kind, rate=spec.rate, frame_size=spec.frame_size,
                                 chunk_interval=spec.chunk_interval, fsync=config.fsync)
    where = f"{config.source}: drivers.recorders.{spec.name}"
    if spec.problem:
        raise ConfigError(f"{where}: {spec.problem}")
    try:
        kind = find_kind(spec.kind, "recorder")
        recorder = kind.cls.from_options(spec.name, dict(spec.options), config.driver_context())
    except Exception as ex:
        raise ConfigError(f"{where}: {error_text(ex)}") from None
    if not isinstance(recorder, Recorder):
        raise ConfigError(f"{where}: kind {spec.kind!r} built {type(recorder).__name__}, not a Recorder")
    return recorder


def build_manipulator(spec: Mapping[str, Any], source: str = "<rig>", context: DriverContext | None = None) -> Any:
    """The manipulator driver a rig file asks for (simulated or a plugin; the ephys-link proxy lives in transports)."""
    from core.config import ConfigError
    from core.drivers.manipulator import SimulatedManipulator, Vec4

    if spec.get("plugin"):
        if spec.get("problem"):
            raise ConfigError(f"{source}: drivers.manipulator: {spec['problem']}")
        try:
            kind = find_kind(str(spec["type"]), "manipulator")
            return kind.cls.from_options(str(spec.get("name", "manipulator")), dict(spec.get("options") or {}),
                                         context or DriverContext(source=source))
        except Exception as ex:
            raise ConfigError(f"{source}: drivers.manipulator: {error_text(ex)}") from None
    if spec.get("type", "simulated") != "simulated":
        raise ConfigError(f"{source}: drivers.manipulator: {spec.get('type')!r} is not built in core "
                          "(ephys_link proxies are made by the serve command)")
    kwargs: dict[str, Any] = {"ids": list(spec.get("ids", ["1", "2"]))}
    if "dimensions" in spec:
        kwargs["dimensions"] = Vec4(*spec["dimensions"])
    if "home" in spec:
        kwargs["home"] = Vec4(*spec["home"])
    for key in ("update_hz", "max_speed", "name"):
        if key in spec:
            kwargs[key] = spec[key]
    try:
        return SimulatedManipulator(**kwargs)
    except Exception as ex:
        raise ConfigError(f"{source}: drivers.manipulator: {ex}") from None
