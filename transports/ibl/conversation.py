"""One peer's side of the iblutil echo protocol, independent of UDP or TCP.

iblutil confirms every message by having the receiver send the exact bytes back (the *echo*), and a
request is answered by a message with the same event code. The wire has no message ids, which is why
iblutil fails where networks are ordinary: a reply that overtakes its echo or any datagram arriving
while an echo is awaited kills the communicator, a lost echo closes it, a late reply is handed to the
next request, and one duplicated datagram can start two peers echoing each other's echoes forever. A
:class:`Conversation` keeps the bytes iblutil expects and fixes those:

- **Echoes are never echoed.** Everything we send that expects an echo is remembered for
  ``echo_memory`` seconds. The copies we expect are its echoes; a copy beyond those is our own message
  coming back (a duplicated echo, or a peer echoing our echo) and is dropped, never echoed or handled.
  The one exception is iblutil's: a rig may answer ``[32, 20]`` with the same bytes, so while an
  EXPSTATUS (or an ALYX token request) waits for its reply, a copy of our bytes with its event code
  after the echo is taken as that reply (with an iblutil rig on a network that duplicates, a copy of
  the echo cannot be told from it: the wire has nothing to tell them apart).
- **A copy is not a new message.** A plain message we echoed comes back byte-identical before anything
  has moved on (no echo of ours confirmed, no new request of ours sent, within ``dup_window``): it is a
  duplicate or our echo bounced back, and is dropped. An iblutil peer repeating a message on purpose
  (a status poll) does so only after the exchange moved on (it echoed our reply first), so it is still
  heard; only if that echo is lost is its next identical request, within ``dup_window``, taken for a
  copy (the iblutil peer then times out, as it does on any lost datagram).
- **Replies.** One request per peer is in flight at a time. A message carrying the pending request's
  event code is its reply, whether it arrives before or after the echo (the reply may overtake it).
- **Late replies.** When a plain request times out, a late reply for that event is *expected* for
  ``late_window`` seconds: it is dropped when it comes (after being echoed, so an iblutil sender is
  satisfied), and a new request with the same event code waits until that has happened or the window
  has passed. Requests with other event codes (which cannot be confused with it) are not held up.

**Two RigDeck peers do better** (UDP only: :mod:`transports.ibl.wire` describes the tail). A RigDeck
rig ends its replies with whitespace that JSON ignores; a console that has seen it from a rig tags its
requests to that rig with an id (a random nonce per conversation and a sequence number), and the rig
tags its reply with the same id. Then:

- a reply is taken only for the request whose id it carries (no late-reply guessing, no waiting);
- the console resends a request until its reply comes (doubling intervals, up to its deadline), for
  every event, since the rig never runs one id twice: a byte-identical copy of the newest request it
  ran from that console is answered from a reply cache (its echo and reply sent again, however late),
  one older than that is dropped, so requests run exactly once and in the order the console sent them;
- a request that times out makes the console forget what it learnt: the next one goes plain, and the
  rig's reply teaches it again (a rig replaced by an iblutil one is never sent a tagged request twice).

An iblutil peer gets exactly the traffic an iblutil peer would send: plain requests, each sent once (a
resend would run twice on an iblutil rig, and make it send two replies while it can await one echo);
a request whose echo does not come in ``echo_timeout`` fails. Nothing here ever closes the endpoint.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import operator
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.link import RemoteError, RequestTimeout
from core.protocol import ExpMessage
from transports.ibl import wire as ibl_wire
from transports.ibl.wire import ErrorReport, Malformed, Message, Tag

log = logging.getLogger(__name__)

#: how many consoles (request nonces) a rig remembers per peer address, each with its newest request
#: and that request's reply: a console has one request in flight, so one reply each is all a resend
#: can need; a peer address is normally one console (two if its port was reused)
NONCE_LIMIT = 4

#: events whose reply an iblutil rig may make byte-identical to the request (``[32, 20]`` answered
#: ``[32, 20]``; ``[128, null, {}]`` by a rig without a token): a copy of such a request, after its echo,
#: may be the reply. For every other event a copy of our request is only ever its echo again.
MAY_REPLY_IDENTICALLY = frozenset({ExpMessage.EXPSTATUS, ExpMessage.ALYX})

#: what an attempt's future holds when the attempt's time is up without a reply
_NO_REPLY: Any = object()


@dataclass(slots=True)
class _Pending:
    """The request in flight with one peer. The request awaits ``attempt``: it is done when the reply comes
    (kept in ``answer``) or, holding :data:`_NO_REPLY`, when the attempt's time (``attempt_ends``) is up.
    ``answered`` is what counts: a reply that arrives in the same loop turn as the attempt's end is kept.
    ``rid`` is the request's id when it was sent tagged to a RigDeck rig."""

    event: ExpMessage
    raw: bytes
    attempt: asyncio.Future[Any]
    rid: str | None = None
    attempt_ends: float = 0.0
    answered: bool = False
    answer: Any = None  # the reply's data, or the exception to raise
    echo_seen: bool = False
    attempts: int = 0


@dataclass(slots=True)
class _Sent:
    """Bytes we sent that expect an echo: how many echoes are still due, the futures waiting for them,
    and until when a copy of these bytes is recognised as ours. ``own``: a copy beyond the echoes due
    is ours coming back, never a new message (for what RigDeck sends on its own account; bytes sent
    through iblutil's Communicator API keep iblutil's rule, one echo per send, then a new message)."""

    until: float
    due: int = 0
    own: bool = False
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)


@dataclass(slots=True)
class _Served:
    """A console's newest tagged request that a rig has run (or is running): its sequence number, and its
    reply once there is one, for the copies of it that may still come."""

    seq: int
    reply: bytes | None = None


@dataclass
class Tuning:
    """Timing of one conversation (all seconds)."""

    echo_timeout: float = 1.0  # a request sent once fails if its echo has not come by then
    retry_after: float = 0.2  # first resend interval of a request to a RigDeck rig (doubles, capped)
    max_retry_interval: float = 1.6
    late_window: float = 3.0  # how long a late reply is expected after a timeout; how long replies are cached
    echo_memory: float = 3.0  # how long we recognise the echo of something we sent
    dup_window: float = 0.5  # how long an unchanged copy of a plain message we echoed counts as a duplicate


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
    duplicates: int = 0  # copies dropped: our own bytes coming back, a message again, a reply again
    replayed: int = 0  # tagged requests seen again and answered from the reply cache (never run twice)
    stale: int = 0  # tagged requests older than one already run: dropped, never run
    extra: dict[str, int] = field(default_factory=dict)


class Conversation:
    """The echo protocol with one peer. ``send`` writes bytes to that peer; ``on_message`` gets new
    messages (already echoed); ``on_malformed`` gets what could not be used (after any echo);
    ``on_report`` gets the peer's error reports that answer none of our requests. ``rigdeck_wire``
    turns on what datagrams need: the copy rules and the tagged exchange with RigDeck peers (UDP; a TCP
    stream neither duplicates nor reorders, so it keeps iblutil's plain rules); ``tags=False`` keeps the
    copy rules but sends nothing iblutil would not (no tail on replies, so no peer ever tags)."""

    def __init__(
        self,
        peer: str,
        send: Callable[[bytes], None],
        on_message: Callable[[Message], None],
        on_malformed: Callable[[Malformed, bytes], None] | None = None,
        tuning: Tuning | None = None,
        limit: int | None = ibl_wire.MAX_DATAGRAM,
        on_report: Callable[[ErrorReport], None] | None = None,
        rigdeck_wire: bool = False,
        tags: bool | None = None,
    ) -> None:
        self.peer = peer
        self._send_raw = send
        self.on_message = on_message
        self.on_malformed = on_malformed
        self.on_report = on_report  # error reports no request of ours was waiting for
        self.tuning = tuning or Tuning()
        self.limit = limit
        self.rigdeck_wire = rigdeck_wire
        self.tags = rigdeck_wire if tags is None else tags and rigdeck_wire  # False: plain iblutil bytes only
        self.rigdeck_peer = False  # the peer's replies carry the RigDeck tail: tag our requests, resend them
        self.stats = Stats()
        self.pending: _Pending | None = None
        self._lock = asyncio.Lock()
        # both kept in the order their entries expire (each lives a fixed time from its last refresh), so
        # forgetting looks at their oldest entries only
        self._unechoed: collections.OrderedDict[bytes, _Sent] = collections.OrderedDict()
        self._late: dict[ExpMessage, collections.deque[float]] = {}
        self._late_changed = asyncio.Event()
        # plain messages we echoed -> (the progress count then, until when a copy is a duplicate)
        self._echoed: collections.OrderedDict[bytes, tuple[int, float]] = collections.OrderedDict()
        self._progress = 0  # moves on with every echo of ours confirmed and every new message we send
        # our request ids; the rig side's newest request run (and its reply) per console nonce
        self._nonce = secrets.token_hex(4)
        self._seq = 0
        self._served: collections.OrderedDict[str, _Served] = collections.OrderedDict()
        # nothing remembered expires before this (a lower bound: sweeping is then skipped)
        self._next_expiry = float("inf")
        # one timer ends the attempts of this peer's requests; re-armed lazily when it fires early
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self.last_activity = 0.0

    @property
    def echoes_due(self) -> int:
        """How many echoes of what we sent have not come back (yet)."""
        return sum(sent.due for sent in self._unechoed.values())

    # ------------------------------------------------------------------------------------ sending
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _send(self, raw: bytes) -> None:
        self.stats.sent += 1
        self._send_raw(raw)

    def send_confirmed(self, raw: bytes, own: bool = False) -> asyncio.Future[None]:
        """Send ``raw`` and return a future resolved by its echo (never failed: callers time out);
        ``own``: see :class:`_Sent`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress += 1
        self._expect_echo(raw, fut, own)
        self._send(raw)
        return fut

    def send_unconfirmed(self, raw: bytes) -> None:
        """Send without waiting; the echo, if the peer sends one, is recognised and dropped."""
        self._progress += 1
        self._send_expecting_echo(raw)

    def _send_expecting_echo(self, raw: bytes, own: bool = False) -> None:
        if not ibl_wire.is_error_report_text(raw):
            self._expect_echo(raw, None, own)
        self._send(raw)

    def reply(self, request: Message, raw: bytes) -> None:
        """Send ``raw``, the reply (or error report) to ``request``. Over UDP it carries the RigDeck tail:
        the request's id if it had one (and is kept for a resend of it), bare otherwise. A reply is no
        progress: a copy of the request arriving after it is still a duplicate."""
        if self.tags:
            tag = request.tag
            if tag is not None and tag.kind == "q":
                raw = self._fitting(ibl_wire.with_tail(raw, "r", tag.rid), request, tag.rid)
                nonce, _, seq = tag.rid.partition(".")
                served = self._served.get(nonce)
                if served is not None and served.seq == int(seq):
                    served.reply = raw
            elif self.limit is None or len(raw) + len(ibl_wire.TAIL) <= self.limit:
                raw = ibl_wire.with_tail(raw)  # (a reply filling a whole datagram goes plain)
        self._send_expecting_echo(raw, own=True)

    def _fitting(self, raw: bytes, request: Message, rid: str) -> bytes:
        """A tagged reply, or the tagged error report saying it is too large for a datagram."""
        if self.limit is None or len(raw) <= self.limit:
            return raw
        text = f"MessageTooLarge: the {request.event.name} reply is {len(raw)} bytes, over the limit of {self.limit}"
        return ibl_wire.with_tail(ibl_wire.error_report(text, int(request.event)), "r", rid)

    def _expect_echo(self, raw: bytes, fut: asyncio.Future[None] | None, own: bool = False) -> None:
        until = self._now() + self.tuning.echo_memory
        sent = self._unechoed.get(raw)
        if sent is None:
            sent = self._unechoed[raw] = _Sent(until)
        else:
            sent.until = until
            self._unechoed.move_to_end(raw)
        sent.own = own and self.rigdeck_wire
        sent.due += 1
        if fut is not None:
            sent.waiters.append(fut)
        self._expires(until)

    def _expires(self, until: float) -> None:
        if until < self._next_expiry:
            self._next_expiry = until

    def _forget_expired(self, now: float) -> None:
        """Drop what is remembered past its time (echoes, late marks, copies, cached replies). Runs only
        when something may have expired (``_next_expiry``), not on every datagram."""
        if now < self._next_expiry:
            return
        soonest = min(_forget_oldest(self._unechoed, now, operator.attrgetter("until")),
                      _forget_oldest(self._echoed, now, lambda seen: seen[1]))
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
        plain = ibl_wire.encode(event, *data, limit=self.limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._lock.acquire()
        try:
            self._forget_expired(loop.time())
            raw, rid = self._tagged(plain)
            if rid is None and event in self._late:
                await self._wait_for_late_replies(event, deadline)
            pending = self.pending = _Pending(event, raw, loop.create_future(), rid)
            try:
                return await self._attempts(pending, deadline, timeout)
            finally:
                self.pending = None
                if pending.answered:
                    pass
                elif rid is not None:  # learn again from the next reply whether the rig is RigDeck
                    self.rigdeck_peer = False
                else:
                    self._expect_late(event, pending.attempts, self.tuning.late_window)
        finally:
            self._lock.release()

    def _tagged(self, plain: bytes) -> tuple[bytes, str | None]:
        """The bytes to send for a request, with its id when the peer is a RigDeck rig."""
        if not (self.tags and self.rigdeck_peer):
            return plain, None
        self._seq += 1
        rid = f"{self._nonce}.{self._seq}"
        raw = ibl_wire.with_tail(plain, "q", rid)
        if self.limit is not None and len(raw) > self.limit:
            return plain, None  # no room for the id: sent once, plain, like to any peer
        return raw, rid

    async def _attempts(self, pending: _Pending, deadline: float, timeout: float) -> list[Any]:
        """Send, and resend while the rules allow, until the reply comes or the time is up."""
        loop = asyncio.get_running_loop()
        event = pending.event
        resend = pending.rid is not None
        interval = self.tuning.retry_after if resend else self.tuning.echo_timeout
        while True:
            pending.attempts += 1
            if pending.attempts > 1:
                self.stats.retries += 1
                log.debug("%s: resending %s (attempt %d)", self.peer, event.name, pending.attempts)
            self._progress += 1
            self._expect_echo(pending.raw, None, own=True)
            self._send(pending.raw)
            await self._attempt(pending, min(deadline, loop.time() + interval))
            if pending.answered:
                return self._answer(pending)
            if loop.time() >= deadline:
                raise self._timeout(pending, timeout)
            if resend:
                interval = min(interval * 2, self.tuning.max_retry_interval)
                continue
            if not pending.echo_seen:
                self.stats.timeouts += 1
                raise RequestTimeout(
                    f"{self.peer}: no echo of {event.name} within {self.tuning.echo_timeout:g} s; "
                    f"the rig may not have received it (not resent: only a RigDeck rig is sent a request twice)"
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
            echoed = self.send_confirmed(raw, own=True)
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
        self._expires(until)

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
        body, tag = ibl_wire.split_tail(raw) if self.rigdeck_wire else (raw, None)
        decoded = ibl_wire.decode(body)
        if tag is not None and tag.kind != "q":
            self.rigdeck_peer = True  # only a RigDeck rig's replies carry a bare or an ``r`` tail
        if tag is not None and tag.kind == "r":
            self._tagged_reply(raw, decoded, tag)
        elif type(decoded) is Message:
            if tag is not None and tag.kind == "q":
                self._tagged_request(raw, Message(decoded.event, decoded.data, tag))
                return
            if self.rigdeck_wire and self._copy_of_echoed(raw, now):
                return
            self._send(raw)  # iblutil: echo the exact bytes first, then act on them
            self._message(decoded if tag is None else Message(decoded.event, decoded.data, tag))
        elif isinstance(decoded, ErrorReport):  # never echoed (iblutil does not either)
            self._error_report(decoded)
        else:
            if self.rigdeck_wire and self._copy_of_echoed(raw, now):
                return
            if len(raw) >= 2 and not ibl_wire.is_error_report_text(raw) \
                    and not decoded.reason.startswith(("not UTF-8", "empty")):
                self._send(raw)
            self.stats.malformed += 1
            if self.on_malformed is not None:
                self.on_malformed(decoded, raw)
            else:
                log.warning("%s: dropped a malformed message: %s", self.peer, decoded.reason)

    def _match_echo(self, raw: bytes) -> bool:
        """Is ``raw`` a copy of bytes we sent? The echoes due are taken in turn; a copy beyond them is
        dropped too (counted as a duplicate), unless it can be the identical reply iblutil may send."""
        sent = self._unechoed.get(raw)
        if sent is None:
            return False
        if sent.due > 0:
            sent.due -= 1
            while sent.waiters:
                fut = sent.waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
                    break
            if self.pending is not None and raw == self.pending.raw:
                self.pending.echo_seen = True
            self._progress += 1
            self.stats.echoes += 1
            return True
        if not sent.own or self._identical_reply(raw):
            return False
        self.stats.duplicates += 1
        return True

    def _identical_reply(self, raw: bytes) -> bool:
        """A copy of our bytes that may be the pending plain request's reply: iblutil answers
        ``[32, 20]`` with ``[32, 20]`` when the status is as the console expects."""
        pending = self.pending
        if pending is None or pending.answered or pending.rid is not None:
            return False
        if pending.event not in MAY_REPLY_IDENTICALLY or (raw == pending.raw and not pending.echo_seen):
            return False
        decoded = ibl_wire.decode(raw)
        return type(decoded) is Message and decoded.event is pending.event

    def _copy_of_echoed(self, raw: bytes, now: float) -> bool:
        """Drop a plain message we echoed if it comes again before anything moved on (see the module
        docstring); otherwise remember it as echoed now. True when dropped."""
        seen = self._echoed.get(raw)
        if seen is not None and seen[0] == self._progress and now <= seen[1]:
            self.stats.duplicates += 1
            return True
        until = now + self.tuning.dup_window
        self._echoed[raw] = (self._progress, until)
        self._echoed.move_to_end(raw)
        self._expires(until)
        return False

    def _tagged_request(self, raw: bytes, msg: Message) -> None:
        """A request from a RigDeck console: run it once, whatever arrives twice. A copy of the newest
        one gets its echo and cached reply again (the console may have lost either), however late; one
        older than the newest is dropped (the console has moved on from it: running it now would run it
        twice or out of order)."""
        assert msg.tag is not None
        nonce, _, seq_text = msg.tag.rid.partition(".")
        seq = int(seq_text)
        served = self._served.get(nonce)
        if served is not None and seq <= served.seq:
            if seq < served.seq:
                self.stats.stale += 1
                log.debug("%s: dropped request %s, older than one already run", self.peer, msg.tag.rid)
                return
            self.stats.replayed += 1
            self._send(raw)
            if served.reply is not None:
                self._send(served.reply)
            return
        self._served[nonce] = _Served(seq)
        self._served.move_to_end(nonce)
        while len(self._served) > NONCE_LIMIT:
            self._served.popitem(last=False)
        self._send(raw)
        self.on_message(msg)

    def _tagged_reply(self, raw: bytes, decoded: Message | ErrorReport | Malformed, tag: Tag) -> None:
        """A RigDeck rig's reply to a tagged request: taken only by the request with that id."""
        pending = self.pending
        if pending is None or pending.answered or pending.rid != tag.rid:
            self.stats.duplicates += 1  # a copy of a reply already taken, or one to a request given up on
            return
        if type(decoded) is Message:
            self._send(raw)
            self._answered(pending, decoded.data)
        elif isinstance(decoded, ErrorReport):
            self._answered(pending, RemoteError(decoded.text, decoded.event))
        else:
            self.stats.malformed += 1
            if self.on_malformed is not None:
                self.on_malformed(decoded, raw)

    def _error_report(self, report: ErrorReport) -> None:
        pending = self.pending
        if pending is not None and not pending.answered and pending.rid is None \
                and report.event in (None, 0, int(pending.event)):
            self._answered(pending, RemoteError(report.text, report.event))
        elif self._take_late(report.event):
            log.info("%s: dropped a late error report (%s)", self.peer, report.text)
        else:
            log.warning("%s reports an error: %s (event %s)", self.peer, report.text, report.event)
            if self.on_report is not None:
                self.on_report(report)

    def _message(self, msg: Message) -> None:
        pending = self.pending
        if pending is not None and not pending.answered and pending.rid is None and msg.event is pending.event:
            if msg.tag is None:
                self.rigdeck_peer = False  # a plain reply: whatever answered before, this peer is iblutil
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
        for sent in self._unechoed.values():
            for fut in sent.waiters:
                if not fut.done():
                    fut.cancel()
        self._unechoed.clear()

def _forget_oldest(table: collections.OrderedDict[bytes, Any], now: float, until_of: Callable[[Any], float]) -> float:
    """Drop the entries of ``table`` (kept in expiry order) whose time has passed; return when the next
    one expires."""
    while table:
        until = until_of(next(iter(table.values())))
        if until >= now:
            return until
        table.popitem(last=False)
    return float("inf")


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
