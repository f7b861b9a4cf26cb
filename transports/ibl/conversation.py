"""One peer's side of the iblutil echo protocol, independent of UDP or TCP.

iblutil confirms every message by having the receiver send the exact bytes back (the *echo*), and a
request is answered by a message with the same event code. The wire has no message ids, which is why
iblutil fails where networks are ordinary: a reply that overtakes its echo or any datagram arriving
while an echo is awaited kills the communicator, a lost echo closes it, and a late reply is handed to
the next request. A :class:`Conversation` keeps the bytes identical and fixes those:

- **Echo matching by content.** Every message we send that expects an echo is remembered (with a
  deadline) until its echo comes back; anything else that arrives is a new message, echoed and handled,
  so an unrelated message or an overtaking reply never fails a request. Our own echoes are never echoed
  back: two RigDeck peers cannot ping-pong.
- **Replies.** One request per peer is in flight at a time. A message carrying the pending request's
  event code is its reply, whether it arrives before or after the echo (the reply may overtake it).
- **Late replies.** When a request times out, a late reply for that event is *expected* for
  ``late_window`` seconds: it is dropped when it comes (after being echoed, so an iblutil sender is
  satisfied), and a new request with the same event code waits until that has happened or the window
  has passed. So a late reply is never handed to a later request; requests with other event codes
  (which cannot be confused with it) are not held up.
- **Retries.** Idempotent requests (EXPSTATUS, EXPINFO) are resent with doubling intervals until their
  deadline; the others are sent once, and a missing echo fails that request only. Nothing here ever
  closes the endpoint.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.link import RemoteError, RequestTimeout
from core.protocol import ExpMessage
from transports.ibl import wire as ibl_wire
from transports.ibl.wire import ErrorReport, Malformed, Message

log = logging.getLogger(__name__)

#: requests that can be resent without changing anything on the rig
IDEMPOTENT = frozenset({ExpMessage.EXPSTATUS, ExpMessage.EXPINFO})


#: what an attempt's future holds when the attempt's time is up without a reply
_NO_REPLY: Any = object()


@dataclass(slots=True)
class _Pending:
    """The request in flight with one peer. The request awaits ``attempt``: it is done when the reply comes
    (kept in ``answer``) or, holding :data:`_NO_REPLY`, when the attempt's time (``attempt_ends``) is up.
    ``answered`` is what counts: a reply that arrives in the same loop turn as the attempt's end is kept."""

    event: ExpMessage
    raw: bytes
    attempt: asyncio.Future[Any]
    attempt_ends: float = 0.0
    answered: bool = False
    answer: Any = None  # the reply's data, or the exception to raise
    echo_seen: bool = False
    attempts: int = 0


@dataclass
class Tuning:
    """Timing of one conversation (all seconds)."""

    echo_timeout: float = 1.0  # a non-idempotent request fails if its echo has not come by then
    retry_after: float = 0.2  # first resend interval of an idempotent request (doubles, capped)
    max_retry_interval: float = 1.6
    late_window: float = 3.0  # how long a late reply is expected after a timeout
    echo_memory: float = 3.0  # how long we recognise the echo of something we sent


@dataclass
class Stats:
    """Counters a user may want to see (and tests check)."""

    sent: int = 0
    received: int = 0
    echoes: int = 0
    retries: int = 0
    late_dropped: int = 0
    malformed: int = 0
    timeouts: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Conversation:
    """The echo protocol with one peer. ``send`` writes bytes to that peer; ``on_message`` gets new
    messages (already echoed); ``on_malformed`` gets what could not be used (after any echo);
    ``on_report`` gets the peer's error reports that answer none of our requests."""

    def __init__(
        self,
        peer: str,
        send: Callable[[bytes], None],
        on_message: Callable[[Message], None],
        on_malformed: Callable[[Malformed, bytes], None] | None = None,
        tuning: Tuning | None = None,
        limit: int | None = ibl_wire.MAX_DATAGRAM,
        on_report: Callable[[ErrorReport], None] | None = None,
    ) -> None:
        self.peer = peer
        self._send_raw = send
        self.on_message = on_message
        self.on_malformed = on_malformed
        self.on_report = on_report  # error reports no request of ours was waiting for
        self.tuning = tuning or Tuning()
        self.limit = limit
        self.stats = Stats()
        self.pending: _Pending | None = None
        self._lock = asyncio.Lock()
        # bytes sent that expect an echo -> queue of (deadline, future or None)
        self._unechoed: dict[bytes, collections.deque[tuple[float, asyncio.Future[None] | None]]] = {}
        self._late: dict[ExpMessage, collections.deque[float]] = {}
        self._late_changed = asyncio.Event()
        # no remembered echo or late mark expires before this (a lower bound: sweeping is then skipped)
        self._next_expiry = float("inf")
        # one timer ends the attempts of this peer's requests; re-armed lazily when it fires early
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self.last_activity = 0.0

    # ------------------------------------------------------------------------------------ sending
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _send(self, raw: bytes) -> None:
        self.stats.sent += 1
        self._send_raw(raw)

    def send_confirmed(self, raw: bytes) -> asyncio.Future[None]:
        """Send ``raw`` and return a future resolved by its echo (never failed: callers time out)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expect_echo(raw, fut)
        self._send(raw)
        return fut

    def send_unconfirmed(self, raw: bytes) -> None:
        """Send without waiting; the echo, if the peer sends one, is recognised and dropped."""
        if not ibl_wire.is_error_report_text(raw):
            self._expect_echo(raw, None)
        self._send(raw)

    def _expect_echo(self, raw: bytes, fut: asyncio.Future[None] | None) -> None:
        until = self._now() + self.tuning.echo_memory
        queue = self._unechoed.get(raw)
        if queue is None:
            queue = self._unechoed[raw] = collections.deque()
        queue.append((until, fut))
        if until < self._next_expiry:
            self._next_expiry = until

    def _forget_expired(self, now: float) -> None:
        """Drop remembered echoes and late marks whose time has passed. Runs only when something
        may have expired (``_next_expiry``), not on every datagram."""
        if now < self._next_expiry:
            return
        soonest = float("inf")
        for raw, queue in list(self._unechoed.items()):
            while queue and queue[0][0] < now:
                queue.popleft()
            if queue:
                soonest = min(soonest, queue[0][0])
            else:
                del self._unechoed[raw]
        for event, marks in list(self._late.items()):
            while marks and marks[0] < now:
                marks.popleft()
            if marks:
                soonest = min(soonest, marks[0])
            else:
                del self._late[event]
                self._late_changed.set()
        self._next_expiry = soonest

    async def request(self, event: ExpMessage, data: list[Any], timeout: float) -> list[Any]:
        """Send ``[event, *data]`` and return the reply's data; see the module docstring for the rules.

        Raises :class:`ibl_wire.MessageTooLarge` at once for an oversized message,
        :class:`RequestTimeout` when no reply comes in ``timeout`` seconds and :class:`RemoteError`
        for an error report.
        """
        raw = ibl_wire.encode(event, *data, limit=self.limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        idempotent = event in IDEMPOTENT
        await self._lock.acquire()
        try:
            self._forget_expired(loop.time())
            if event in self._late:
                await self._wait_for_late_replies(event, deadline)
            pending = self.pending = _Pending(event, raw, loop.create_future())
            try:
                return await self._attempts(pending, deadline, timeout, idempotent)
            finally:
                self.pending = None
                if not pending.answered:
                    self._expect_late(event, pending.attempts, self.tuning.late_window)
                elif pending.attempts > 1:  # the other attempts may be answered too
                    self._expect_late(event, pending.attempts - 1, min(self.tuning.late_window, 0.5))
        finally:
            self._lock.release()

    async def _attempts(self, pending: _Pending, deadline: float, timeout: float, idempotent: bool) -> list[Any]:
        """Send, and resend while the rules allow, until the reply comes or the time is up."""
        loop = asyncio.get_running_loop()
        event = pending.event
        interval = self.tuning.retry_after if idempotent else self.tuning.echo_timeout
        while True:
            pending.attempts += 1
            if pending.attempts > 1:
                self.stats.retries += 1
                log.debug("%s: resending %s (attempt %d)", self.peer, event.name, pending.attempts)
            self._expect_echo(pending.raw, None)
            self._send(pending.raw)
            await self._attempt(pending, min(deadline, loop.time() + interval))
            if pending.answered:
                return self._answer(pending)
            if loop.time() >= deadline:
                raise self._timeout(pending, timeout)
            if idempotent:
                interval = min(interval * 2, self.tuning.max_retry_interval)
                continue
            if not pending.echo_seen:
                raise RequestTimeout(
                    f"{self.peer}: no echo of {event.name} within {self.tuning.echo_timeout:g} s; "
                    f"the rig may not have received it (not resent: {event.name} is not idempotent)"
                )
            await self._attempt(pending, deadline)
            if pending.answered:
                return self._answer(pending)
            raise self._timeout(pending, timeout)

    def _attempt(self, pending: _Pending, ends: float) -> asyncio.Future[Any]:
        """A future to await: done when the reply comes or at ``ends``, whichever is first."""
        if pending.attempt.done():
            pending.attempt = asyncio.get_running_loop().create_future()
        if pending.answered:
            pending.attempt.set_result(None)
        else:
            pending.attempt_ends = ends
            self._arm(ends)
        return pending.attempt

    @staticmethod
    def _answer(pending: _Pending) -> list[Any]:
        if isinstance(pending.answer, Exception):  # an error report, or the endpoint closed
            raise pending.answer
        return pending.answer

    def _answered(self, pending: _Pending, answer: Any) -> None:
        """The reply to the pending request has come (its data, or the exception to raise)."""
        pending.answered = True
        pending.answer = answer
        if not pending.attempt.done():
            pending.attempt.set_result(None)

    def _arm(self, when: float) -> None:
        """Have the attempt timer fire by ``when``. A timer already set to fire earlier is kept (it
        re-arms itself for the current attempt when it fires), so back-to-back requests cost no timer."""
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = asyncio.get_running_loop().call_at(when, self._attempt_timer)

    def _attempt_timer(self) -> None:
        self._timer = None
        pending = self.pending
        if pending is None or pending.attempt.done():
            return
        if self._now() >= pending.attempt_ends - 1e-4:  # (a loop may run a timer a clock tick early)
            pending.attempt.set_result(_NO_REPLY)
        else:
            self._arm(pending.attempt_ends)

    async def deliver(self, event: ExpMessage, data: list[Any], timeout: float) -> None:
        """Send a one-way message (:func:`ibl_wire.is_one_way`) once; done when its echo comes back."""
        raw = ibl_wire.encode(event, *data, limit=self.limit)
        wait = min(timeout, self.tuning.echo_timeout)
        async with self._lock:  # like iblutil: one confirmed message per peer at a time
            echoed = self.send_confirmed(raw)
            timer = asyncio.get_running_loop().call_later(
                wait, lambda: echoed.done() or echoed.set_result(_NO_REPLY))
            try:
                confirmed = await echoed is not _NO_REPLY
            finally:
                timer.cancel()
            if not confirmed:
                self.stats.timeouts += 1
                raise RequestTimeout(f"{self.peer}: no echo of {event.name} within {wait:g} s; "
                                     "the rig may not have received it (not resent)")

    def _timeout(self, pending: _Pending, timeout: float) -> RequestTimeout:
        self.stats.timeouts += 1
        seen = "echo received, no reply" if pending.echo_seen else "no echo"
        return RequestTimeout(
            f"{self.peer}: no reply to {pending.event.name} within {timeout:g} s "
            f"({seen}; {pending.attempts} attempt{'s' if pending.attempts != 1 else ''})"
        )

    def _expect_late(self, event: ExpMessage, count: int, window: float) -> None:
        marks = self._late.setdefault(event, collections.deque())
        until = self._now() + window
        marks.extend([until] * count)
        if until < self._next_expiry:
            self._next_expiry = until

    async def _wait_for_late_replies(self, event: ExpMessage, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._forget_expired(loop.time())
            marks = self._late.get(event)
            if not marks:
                return
            until = min(marks[0], deadline)
            if loop.time() >= deadline:
                raise RequestTimeout(
                    f"{self.peer}: still waiting for a late reply to an earlier {event.name}; "
                    "not sending another until it has come (or the late window has passed)"
                )
            self._late_changed.clear()
            try:
                await asyncio.wait_for(self._late_changed.wait(), timeout=max(until - loop.time(), 0))
            except TimeoutError:
                pass

    def _take_late(self, event: int | None) -> bool:
        if event is None or not self._late:
            return False
        try:
            marks = self._late.get(ExpMessage(event))
        except ValueError:
            return False
        if not marks:
            return False
        marks.popleft()
        self._late_changed.set()
        self.stats.late_dropped += 1
        return True

    # ---------------------------------------------------------------------------------- receiving
    def receive(self, raw: bytes) -> None:
        """Handle one received message (a datagram, or one message cut from a TCP stream)."""
        now = self._now()
        self.last_activity = now
        self.stats.received += 1
        self._forget_expired(now)
        if self._match_echo(raw):
            return
        decoded = ibl_wire.decode(raw)
        if type(decoded) is Message:
            self._send(raw)  # iblutil: echo the exact bytes first, then act on them
            self._message(decoded)
        elif isinstance(decoded, ErrorReport):  # never echoed (iblutil does not either)
            self._error_report(decoded)
        else:
            if len(raw) >= 2 and not ibl_wire.is_error_report_text(raw) \
                    and not decoded.reason.startswith(("not UTF-8", "empty")):
                self._send(raw)
            self.stats.malformed += 1
            if self.on_malformed is not None:
                self.on_malformed(decoded, raw)
            else:
                log.warning("%s: dropped a malformed message: %s", self.peer, decoded.reason)

    def _match_echo(self, raw: bytes) -> bool:
        queue = self._unechoed.get(raw)
        if not queue:
            return False
        _, fut = queue.popleft()
        if not queue:
            del self._unechoed[raw]
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self.pending is not None and raw == self.pending.raw:
            self.pending.echo_seen = True
        self.stats.echoes += 1
        return True

    def _error_report(self, report: ErrorReport) -> None:
        pending = self.pending
        if pending is not None and not pending.answered and report.event in (None, 0, int(pending.event)):
            self._answered(pending, RemoteError(report.text, report.event))
        elif self._take_late(report.event):
            log.info("%s: dropped a late error report (%s)", self.peer, report.text)
        else:
            log.warning("%s reports an error: %s (event %s)", self.peer, report.text, report.event)
            if self.on_report is not None:
                self.on_report(report)

    def _message(self, msg: Message) -> None:
        pending = self.pending
        if pending is not None and not pending.answered and msg.event is pending.event:
            self._answered(pending, msg.data)
        elif self._take_late(int(msg.event)):
            log.info("%s: dropped a late %s reply (its request had timed out)", self.peer, msg.event.name)
        else:
            self.on_message(msg)

    def close(self) -> None:
        """Fail the pending request (the endpoint is going away)."""
        from core.link import LinkClosed

        if self.pending is not None and not self.pending.answered:
            self._answered(self.pending, LinkClosed(f"{self.peer}: endpoint closed"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for queue in self._unechoed.values():
            for _, fut in queue:
                if fut is not None and not fut.done():
                    fut.cancel()
        self._unechoed.clear()

def tuning_from(options: dict[str, Any]) -> Tuning:
    """The conversation timing named in a rig's options (unknown keys are ignored here)."""
    tuning = Tuning()
    for key in ("echo_timeout", "retry_after", "late_window"):
        if key in options:
            value = float(options[key])
            if not value > 0:
                raise ValueError(f"option {key} must be > 0 seconds, got {options[key]!r}")
            setattr(tuning, key, value)
    return tuning
