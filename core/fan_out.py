"""The session engine's fan-out: one command to many rigs at once, one :class:`~core.steps.Outcome` per rig.

Apart from :mod:`core.session` because it is the one part that talks to links: it takes the monitor's
per-rig lock (so an EXPSTATUS poll never overlaps a command), bounds every request by the rig's timeout
plus :data:`~core.monitor.TIMEOUT_GUARD` (a buggy link must not hang a session), turns every failure into
an outcome (never an exception for one rig), tells the monitor what the rig did (answered, reported an
error, stayed silent, or nothing reached it), journals the exchange and reports progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core import monitor as monitor_mod
from core.journal import redact, redact_alyx
from core.link import RemoteError, RigError, RigLink, error_text
from core.monitor import RigMonitor, reply_status, status_name
from core.protocol import ExpMessage, ExpStatus
from core.session_files import SessionJournal
from core.steps import Outcome, Progress, SessionError

log = logging.getLogger(__name__)

Payload = Callable[[str], tuple[Any, ...]]


class FanOut:
    """``await fan_out(step, event, names, payload, expect)`` -> ``{name: Outcome}``.

    ``expect``: the status a successful reply implies (a reply naming another status is an error), or None.
    ``heard_status(name, status)`` is called for every status a reply carries (the monitor only tells of
    changes; the session must see every report, e.g. a dropped rig saying it is idle).
    """

    def __init__(self, links: Mapping[str, RigLink], monitor: RigMonitor, journal: SessionJournal,
                 emit: Callable[[Progress], None], rig_timeout: Callable[[str], float],
                 heard_status: Callable[[str, int], None]) -> None:
        self.links = links
        self.monitor = monitor
        self.journal = journal
        self.emit = emit
        self.rig_timeout = rig_timeout
        self.heard_status = heard_status

    async def __call__(self, step: str, event: ExpMessage, names: Sequence[str], payload: Payload,
                       expect: ExpStatus | None) -> dict[str, Outcome]:
        for name in names:
            if name not in self.links:
                raise SessionError(f"unknown rig {name!r}; rigs: {sorted(self.links)}")
        if not names:
            return {}
        results = await asyncio.gather(*(self._one(step, name, event, payload(name), expect) for name in names))
        return dict(zip(names, results, strict=True))

    async def _one(self, step: str, name: str, event: ExpMessage, data: tuple[Any, ...],
                   expect: ExpStatus | None) -> Outcome:
        timeout = self.rig_timeout(name)
        shown = redact_alyx(list(data)) if event is ExpMessage.ALYX else list(data)
        self.journal.write("send", step=step, rig=name, event=event.name, data=shown)
        self.emit(Progress(step, name, "sent", event.name))
        heard = "failure"  # what the rig did, for the monitor: reply | report | silence | failure (nothing, our side)
        async with self.monitor.lock(name):
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(timeout + monitor_mod.TIMEOUT_GUARD):
                    reply = await self.links[name].request(event, *data, timeout=timeout)
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
                outcome, heard = check_reply(name, event, reply, expect), "reply"
            outcome.rtt_ms = round((time.perf_counter() - t0) * 1e3, 3)
        self._record(step, outcome, event, heard)
        return outcome

    def _record(self, step: str, outcome: Outcome, event: ExpMessage, heard: str) -> None:
        """Tell the monitor what the rig did, journal it and report it."""
        name = outcome.rig
        data = shown_reply(event, outcome.reply)
        if heard == "silence":
            self.monitor.record_silence(name, outcome.error or "no reply", data=data)
        elif heard == "failure":
            self.monitor.record_failure(name, outcome.error or "request failed")
        else:
            self.monitor.record_reply(name, rtt_ms=outcome.rtt_ms, status=outcome.status, data=data,
                                      error=outcome.error, reported=heard == "report")
        if outcome.status is not None:
            self.heard_status(name, outcome.status)
        kind = "reply" if outcome.ok else outcome.result
        self.journal.write(kind, step=step, rig=name, event=outcome.event, status=outcome.status,
                           rtt_ms=outcome.rtt_ms, error=outcome.error, data=data)
        self.emit(Progress(step, name, kind, outcome.describe(), outcome))


def check_reply(name: str, event: ExpMessage, reply: Any, expect: ExpStatus | None) -> Outcome:
    """The outcome of a reply: its status, and an error when it names another status than ``expect``."""
    if not isinstance(reply, list):
        reply = [reply]
    status = None if event is ExpMessage.ALYX else reply_status(reply)
    outcome = Outcome(name, event.name, "reply", reply=reply, status=status)
    if expect is not None:
        if status is None:
            outcome.status = int(expect)  # iblrig-style reply without a status: success means it got there
        elif status != expect and not (event is ExpMessage.EXPINTERRUPT and status == ExpStatus.CONNECTED):
            outcome.result = "error"
            outcome.error = f"rig reports {status_name(status)} after {event.name}, expected {expect.name}"
    return outcome


def shown_reply(event: ExpMessage, reply: Any) -> Any:
    """A reply as journals and the live state may show it (secrets and Alyx tokens redacted)."""
    if reply is None:
        return None
    return redact_alyx(reply) if event is ExpMessage.ALYX else redact(reply)
