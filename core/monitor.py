"""The rig monitor: what the console knows about each rig's liveness, for as long as the links live.

One :class:`RigMonitor` is made where the links are made (``app.rigset.RigSet``) and outlives every
session run over them. It is the one place that:

- listens to the links (state changes, pushed updates, heartbeats, every reply whoever asked) and polls
  EXPSTATUS every ``poll_interval`` from rigs that don't push their status, and from a pushing rig that has
  been quiet for :data:`QUIET_PROBE` s (never two requests at once to one rig:
  the per-rig :meth:`lock` is shared with the session engine, which takes it for its own requests);
- writes the ``rigs/<name>`` subtree of the live state, and nothing else does: ``uri``, ``transport``,
  ``role``, ``in_session``, ``link``, ``status``, ``last_reply`` / ``rtt_ms`` (the last answered request),
  ``last_heard`` (any message: a reply or a pushed update), ``last_error`` (the trouble the rig is in *now*:
  cleared when it is back or answers well again), ``errors`` (the last :data:`ERRORS_KEPT` errors as
  ``[time, text]``, kept after recovery for a history), ``last_reply_data`` and ``service`` (the rig's own
  published tree, when its transport streams one);
- keeps :class:`Incident` records, "rig X went unreachable at T and came back at T'" (``link_lost``) and
  "rig X reported an error" (``rig_error``, closed by its next good answer), and tells listeners.

Sessions read liveness and status from here, subscribe while they run (journaling each incident) and
unsubscribe when done, so sessions come and go while the links and their listeners stay as they are.
One condition gives one stable text: while a rig stays unreachable, ``last_error`` keeps the text of the
loss (the link's "port unreachable" and the poller's "no reply" do not take turns), and the link listeners
hear of a loss once and of the recovery once.
``last_heard`` is written at most every :data:`HEARD_THROTTLE` seconds per rig: a rig that pushes
positions at 100 Hz must not become 100 live-state mods a second.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.checks import is_int
from core.config import RigSpec, Role
from core.link import LinkState, RemoteError, RigError, RigLink, error_text
from core.listeners import Listeners, Unsubscribe
from core.protocol import ExpMessage, ExpStatus
from core.state import LiveState

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_POLL_INTERVAL = 1.0
#: extra time a link gets beyond its own timeout before the engine gives up on it (a buggy link must not hang us)
TIMEOUT_GUARD = 1.0
#: ``last_heard`` (and a pushing rig's ``last_reply``) is written at most this often per rig
HEARD_THROTTLE = 0.5
#: the share of a rig's poll period its EXPSTATUS poll may wait for the reply
POLL_TIMEOUT_SHARE = 0.75
#: a rig that pushes its status is not polled, unless it has been quiet this long: then one EXPSTATUS probes it
#: (an idle manipulator rig pushes nothing; its "last heard" must not grow as if it were gone)
QUIET_PROBE = 3.0
#: incidents kept in memory (a rig that flaps for a week must not grow the console without bound)
INCIDENTS_KEPT = 1000
#: errors kept per rig in ``rigs/<name>/errors`` (the history behind a cleared ``last_error``)
ERRORS_KEPT = 20

LINK_LOST = "link_lost"
RIG_ERROR = "rig_error"

#: the ``data`` argument of :meth:`RigMonitor.record_reply` when the caller has nothing to show
_KEEP: Any = object()


def reply_status(reply: Any) -> int | None:
    """The ExpStatus a reply carries: a leading int (EXPSTATUS, EXPINFO) or a dict's ``status`` key."""
    if not isinstance(reply, list):
        return None
    for item in reply:
        value = item.get("status") if isinstance(item, dict) else item
        if is_int(value):
            try:
                return int(ExpStatus(value))
            except ValueError:
                return None
        if isinstance(item, str):
            try:
                return int(ExpStatus.coerce(item))
            except ValueError:
                continue
    return None


def status_name(status: int | None) -> str:
    if status is None:
        return "-"
    try:
        return ExpStatus(status).name
    except ValueError:
        return str(status)


def spec_seconds(spec: RigSpec | None, key: str, default: float) -> float:
    """A per-rig time option of the rigs file (``timeout``, ``poll_interval``), else ``default``."""
    return float(spec.options.get(key, default)) if spec else float(default)


@dataclasses.dataclass(frozen=True)
class Incident:
    """One stretch of trouble with one rig. ``until`` is None while it lasts."""

    id: int
    rig: str
    #: :data:`LINK_LOST` | :data:`RIG_ERROR`
    kind: str
    since: float
    until: float | None = None
    detail: str | None = None

    @property
    def open(self) -> bool:
        return self.until is None

    def to_dict(self) -> dict[str, Any]:
        """The form journals and descriptions keep: ``{rig, kind, from, to, detail}`` (epoch seconds)."""
        return {"rig": self.rig, "kind": self.kind, "from": self.since, "to": self.until, "detail": self.detail}


class RigMonitor:
    """Watches ``links`` until :meth:`close`. ``await start()`` begins polling (when ``poll_interval``)."""

    def __init__(
        self,
        links: Mapping[str, RigLink],
        specs: Mapping[str, RigSpec] | None = None,
        *,
        state: LiveState | None = None,
        poll_interval: float | None = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.links: dict[str, RigLink] = dict(links)
        self.specs: dict[str, RigSpec] = dict(specs or {})
        self.state = state if state is not None else LiveState()
        self.poll_interval = poll_interval if poll_interval and poll_interval > 0 else None
        self.timeout = float(timeout)
        self.incidents: collections.deque[Incident] = collections.deque(maxlen=INCIDENTS_KEPT)
        self._link_listeners: Listeners[[str, str, str | None]] = Listeners("rig monitor link listener")
        self._status_listeners: Listeners[[str, int, str]] = Listeners("rig monitor status listener")
        self._incident_listeners: Listeners[[Incident]] = Listeners("rig monitor incident listener")
        self._statuses: dict[str, int | None] = dict.fromkeys(self.links)
        self._expected: dict[str, ExpStatus] = dict.fromkeys(self.links, ExpStatus.CONNECTED)
        self._locks = {n: asyncio.Lock() for n in self.links}
        #: monotonic time of the last message from (or request to) each rig; a pushing rig starts "just heard"
        self._last_contact: dict[str, float] = {n: time.monotonic() for n, link in self.links.items()
                                                if link.pushes_status}
        self._heard_written: dict[str, float] = {}
        self._open: dict[tuple[str, str], Incident] = {}
        self._errors: dict[str, collections.deque[list[Any]]] = {
            n: collections.deque(maxlen=ERRORS_KEPT) for n in self.links}
        self._ids = itertools.count(1)
        self._poller: asyncio.Task[None] | None = None
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._init_state()
        self._unsubscribe: list[Unsubscribe] = []
        for name, link in self.links.items():
            self._unsubscribe += [
                link.on_state(lambda st, err, name=name: self._set_link(name, st.value, err)),
                link.on_update(lambda mod, name=name: self._on_update(name, mod)),
                link.on_heard(lambda rtt, name=name: self._on_heard(name, rtt)),
            ]
            if link.state is LinkState.UNREACHABLE:  # already down before we watched it
                self._open_incident(name, LINK_LOST, link.last_error)

    # ==================================================================== reading
    def status(self, name: str) -> int | None:
        """The rig's last known ExpStatus (kept after :meth:`close`, for a final report)."""
        return self._statuses.get(name)

    def link_state(self, name: str) -> str | None:
        return self.state.get(["rigs", name, "link"])

    def open_incidents(self, names: Iterable[str] | None = None) -> list[Incident]:
        wanted = set(self.links if names is None else names)
        return [i for i in self._open.values() if i.rig in wanted]

    def rig_timeout(self, name: str) -> float:
        return spec_seconds(self.specs.get(name), "timeout", self.timeout)

    def lock(self, name: str) -> asyncio.Lock:
        """Held around every request to the rig from the poller or a session: one request at a time."""
        return self._locks[name]

    # ==================================================================== listening
    def on_link(self, listener: Callable[[str, str, str | None], object]) -> Unsubscribe:
        """``listener(rig, link_state_value, error)`` when a rig's link state changes."""
        return self._link_listeners.add(listener)

    def on_status(self, listener: Callable[[str, int, str], object]) -> Unsubscribe:
        """``listener(rig, status, source)`` when a rig's ExpStatus changes; source: reply, poll, push."""
        return self._status_listeners.add(listener)

    def on_incident(self, listener: Callable[[Incident], object]) -> Unsubscribe:
        """``listener(incident)`` when an incident opens and again when it closes (``until`` set)."""
        return self._incident_listeners.add(listener)

    def listener_count(self) -> int:
        return len(self._link_listeners) + len(self._status_listeners) + len(self._incident_listeners)

    # ==================================================================== what others tell it
    def expect(self, names: Iterable[str], status: ExpStatus) -> None:
        """The ExpStatus the console expects of these rigs now: what the EXPSTATUS polls carry."""
        for name in names:
            if name in self._expected:
                self._expected[name] = status

    def assume_status(self, name: str, status: int | None) -> None:
        """A status from elsewhere (a journal being reattached): taken only if nothing fresher was heard."""
        if name in self._statuses and self._statuses[name] is None and status is not None:
            self._set_status(name, status, "journal")

    def record_reply(self, name: str, *, rtt_ms: float | None, status: int | None = None, data: Any = _KEEP,
                     error: str | None = None, reported: bool = False, source: str = "reply") -> None:
        """The rig answered a request (``reported``: with an error report, a :data:`RIG_ERROR` incident)."""
        now = time.time()
        self._last_contact[name] = time.monotonic()
        self._heard_written[name] = time.monotonic()
        self._set_link(name, LinkState.ONLINE.value, None)
        self.state.update(["rigs", name], {"last_reply": round(now, 3), "last_heard": round(now, 3), "rtt_ms": rtt_ms})
        if status is not None:
            self._set_status(name, status, source)
        if error:
            self._note_error(name, error)
        if data is not _KEEP:
            self.state.set(["rigs", name, "last_reply_data"], data)
        if reported:
            self._open_incident(name, RIG_ERROR, error)
        elif not error:
            self._close_incident(name, RIG_ERROR)
            self._clear_error(name)

    def record_silence(self, name: str, error: str, data: Any = _KEEP) -> None:
        """A request to the rig went unanswered: it is unreachable until it speaks again."""
        self._set_link(name, LinkState.UNREACHABLE.value, error)
        if data is not _KEEP:
            self.state.set(["rigs", name, "last_reply_data"], data)

    def record_failure(self, name: str, error: str) -> None:
        """A request failed on our side of the link (closed, cannot send): the rig said nothing."""
        self._note_error(name, error)

    # ==================================================================== lifecycle
    async def start(self) -> None:
        """Begin polling the rigs that don't push (nothing to do without a poll interval)."""
        if self.poll_interval and self._poller is None and not self._closed:
            self._poller = asyncio.create_task(self._poll_loop(), name="rigdeck-monitor-poller")

    async def close(self) -> None:
        """Stop polling and let go of the links (they stay open: the caller owns them). The live state keeps
        its last picture of the rigs; the next monitor over this state replaces it."""
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        tasks = [t for t in [self._poller, *self._polls.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None

    @property
    def polling(self) -> bool:
        return self._poller is not None and not self._poller.done()

    # ==================================================================== live state
    def _init_state(self) -> None:
        rigs = {}
        for name, link in self.links.items():
            spec = self.specs.get(name)
            rigs[name] = {
                "uri": link.uri, "transport": spec.scheme if spec else link.uri.split("://")[0],
                "role": (spec.role.value if spec else Role.AUX.value), "in_session": spec.in_sessions if spec else True,
                "link": link.state.value, "status": None, "last_reply": None, "last_heard": None, "rtt_ms": None,
                "last_error": link.last_error, "errors": [],
            }
        self.state.set(["rigs"], rigs)

    def _set_link(self, name: str, value: str, error: str | None) -> None:
        """A change of link state (a repeat of the current one, whatever its text, is no news)."""
        if self._closed:
            return
        current = self.state.get(["rigs", name, "link"])
        if value == current:
            return
        self.state.set(["rigs", name, "link"], value)
        if value == LinkState.UNREACHABLE.value:
            self._note_error(name, error or "unreachable")
            self._open_incident(name, LINK_LOST, error)
        elif value == LinkState.ONLINE.value:
            self._close_incident(name, LINK_LOST)
            self._clear_error(name)
        self._link_listeners.notify(name, value, error)

    def _note_error(self, name: str, text: str) -> None:
        """The rig's trouble now (``last_error``) and one more line of its history (``errors``)."""
        if self._closed or name not in self._errors:
            return
        if self.state.get(["rigs", name, "last_error"]) != text:
            self.state.set(["rigs", name, "last_error"], text)
        history = self._errors[name]
        if not history or history[-1][1] != text:
            history.append([round(time.time(), 3), text])
            self.state.set(["rigs", name, "errors"], list(history))

    def _clear_error(self, name: str) -> None:
        """The rig is back (or answers well): its error leaves the live column, stays in ``errors``."""
        if self._closed or (name, RIG_ERROR) in self._open or (name, LINK_LOST) in self._open:
            return
        if self.state.get(["rigs", name, "last_error"]) is not None:
            self.state.set(["rigs", name, "last_error"], None)

    def _set_status(self, name: str, status: int, source: str) -> None:
        if status == self._statuses.get(name):
            return
        self._statuses[name] = status
        self.state.set(["rigs", name, "status"], status)
        self._status_listeners.notify(name, status, source)

    def _on_heard(self, name: str, rtt: float | None) -> None:
        """Any message from the rig, whoever asked: keep ``last_heard`` current (throttled)."""
        now = time.monotonic()
        self._last_contact[name] = now
        if self._closed or now - self._heard_written.get(name, -HEARD_THROTTLE) < HEARD_THROTTLE:
            return
        self._heard_written[name] = now
        wall = round(time.time(), 3)
        values: dict[str, Any] = {"last_heard": wall}
        if rtt is not None:
            values.update(last_reply=wall, rtt_ms=round(rtt * 1e3, 3))
        self.state.update(["rigs", name], values)

    def _on_update(self, name: str, mod: dict[str, Any]) -> None:
        """Mirror a pushing rig's published tree under ``rigs/<name>/service``; pick its status out of it."""
        if self._closed:
            return
        try:
            if mod.get("action") == "init":
                self.state.set(["rigs", name, "service"], mod.get("struct"))
            else:
                self.state.apply({**mod, "path": ["rigs", name, "service", *mod.get("path", [])]})
        except (KeyError, IndexError, TypeError, ValueError) as ex:
            log.warning("%s: cannot apply a pushed mod (%s); waiting for the next init", name, ex)
            return
        service = self.state.get(["rigs", name, "service"])
        status = service.get("status") if isinstance(service, dict) else None
        if is_int(status):
            self._set_status(name, status, "push")
        if mod.get("action") == "setitem" and not mod.get("path") and mod.get("key") == "last_error":
            self._close_incident(name, RIG_ERROR)  # a new error is a new incident; none is the end of one
            if mod.get("value"):
                self._note_error(name, str(mod["value"]))
                self._open_incident(name, RIG_ERROR, str(mod["value"]))
            else:
                self._clear_error(name)

    # ==================================================================== incidents
    def _open_incident(self, name: str, kind: str, detail: str | None) -> None:
        if (name, kind) in self._open:
            return
        incident = Incident(next(self._ids), name, kind, round(time.time(), 3), None, detail)
        self._open[(name, kind)] = incident
        self.incidents.append(incident)
        log.info("rig %s: %s since %s%s", name, kind, incident.since, f" ({detail})" if detail else "")
        self._incident_listeners.notify(incident)

    def _close_incident(self, name: str, kind: str) -> None:
        incident = self._open.pop((name, kind), None)
        if incident is None:
            return
        closed = dataclasses.replace(incident, until=round(time.time(), 3))
        for i, kept in enumerate(self.incidents):
            if kept.id == incident.id:
                self.incidents[i] = closed
                break
        self._incident_listeners.notify(closed)

    # ==================================================================== the EXPSTATUS poller
    async def _poll_loop(self) -> None:
        """Every poll interval, ask each quiet rig that doesn't push for its EXPSTATUS (never two at once); a
        rig that pushes is asked only after :data:`QUIET_PROBE` s of silence."""
        assert self.poll_interval is not None
        while not self._closed:
            now = time.monotonic()
            for name, link in self.links.items():
                interval = spec_seconds(self.specs.get(name), "poll_interval", self.poll_interval)
                if self._locks[name].locked() or name in self._polls:
                    continue
                quiet = max(interval, QUIET_PROBE) if link.pushes_status else interval
                if now - self._last_contact.get(name, 0.0) < quiet * 0.9:
                    continue
                self._polls[name] = asyncio.create_task(self._poll(name, interval), name=f"rigdeck-poll-{name}")
            await asyncio.sleep(self.poll_interval / 4)

    async def _poll(self, name: str, interval: float) -> None:
        link = self.links[name]
        # a poll must end before the next is due: a silent rig (no ICMP: its host is down) is then found within
        # two poll periods, and a session rig's loss is an alarm within 2 s at the default 1 s period
        timeout = min(self.rig_timeout(name), max(interval * POLL_TIMEOUT_SHARE, 0.5))
        try:
            async with self._locks[name]:
                self._last_contact[name] = time.monotonic()
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout + TIMEOUT_GUARD):
                        reply = await link.request(ExpMessage.EXPSTATUS, int(self._expected[name]), timeout=timeout)
                except TimeoutError:
                    self.record_silence(name, f"no reply to EXPSTATUS within {timeout:g} s")
                    return
                except RemoteError as ex:
                    rtt = round((time.perf_counter() - t0) * 1e3, 3)
                    self.record_reply(name, rtt_ms=rtt, error=ex.text or error_text(ex), reported=True, source="poll")
                    return
                except RigError as ex:
                    self.record_failure(name, str(ex) or error_text(ex))
                    return
                rtt = round((time.perf_counter() - t0) * 1e3, 3)
            status = reply_status(reply if isinstance(reply, list) else [reply])
            self.record_reply(name, rtt_ms=rtt, status=status, source="poll")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: status poll failed", name)
        finally:
            self._polls.pop(name, None)


__all__ = [
    "DEFAULT_POLL_INTERVAL", "DEFAULT_TIMEOUT", "ERRORS_KEPT", "HEARD_THROTTLE", "Incident", "LINK_LOST",
    "QUIET_PROBE", "RIG_ERROR", "RigMonitor", "TIMEOUT_GUARD", "reply_status", "spec_seconds", "status_name",
]
