"""An iblutil endpoint: conversations with peers, a rig service behind it, and iblutil's Communicator API.

:class:`IblEndpoint` is what UDP (:mod:`transports.ibl.udp`) and TCP (:mod:`transports.ibl.tcp`) share.
In the server role a :class:`core.link.MessageHandler` (a RigDeck rig service) answers every message;
each peer's messages are handled in order, different peers concurrently, and a handler failure is
answered ``[0, "ExcType: message", event]``. For people porting iblutil services the endpoint also offers
iblutil's Communicator API with the same message shapes: ``assign_callback``, ``clear_callbacks``,
``await on_event(...)``, ``confirmed_send`` and the Service methods ``init``, ``start``, ``stop``,
``cleanup``, ``status``, ``info``, ``alyx`` — none of which closes the endpoint on a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from core.checks import is_int
from core.link import MessageHandler, error_text
from core.protocol import ExpMessage, ExpStatus, format_exp_ref
from transports.eager import start_eagerly
from transports.ibl import wire as ibl_wire
from transports.ibl.conversation import Conversation, Tuning
from transports.ibl.wire import ErrorReport, Malformed, Message
from transports.rate_log import RateLimitedLog

log = logging.getLogger(__name__)

Address = Any  # (host, port) for UDP peers; a connection id for TCP
Callback = Callable[..., Any] | asyncio.Future


class IblEndpoint:
    """Shared logic of the UDP and TCP endpoints; subclasses create conversations and move bytes."""

    #: whether conversations follow the copy rules and speak the tagged exchange with RigDeck peers
    #: (datagrams; see :mod:`conversation`); ``rigdeck_tags = False`` keeps the rules, drops the tags
    rigdeck_wire = False
    rigdeck_tags = True

    def __init__(self, name: str, service: MessageHandler | None = None, tuning: Tuning | None = None,
                 limit: int | None = ibl_wire.MAX_DATAGRAM) -> None:
        self.name = name
        self.service = service
        self.tuning = tuning or Tuning()
        self.limit = limit
        self.conversations: dict[Address, Conversation] = {}
        # per single event code (0: error reports), as iblutil keeps them: (callback, return_event)
        self._callbacks: dict[int, list[tuple[Callback, bool]]] = {}
        self._serve_locks: dict[Address, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rlog = RateLimitedLog(log)
        self.closed = False

    # ------------------------------------------------------------------------ subclass interface
    def _send_to(self, addr: Address, raw: bytes) -> None:
        raise NotImplementedError

    def _sender(self, addr: Address) -> Callable[[bytes], None]:
        """What a conversation with ``addr`` sends its bytes with."""
        return lambda raw: self._send_to(addr, raw)

    def _default_addr(self) -> Address | None:
        """The peer of a client-role endpoint (None for servers: ``addr`` is then required)."""
        return None

    def _describe(self, addr: Address) -> str:
        return str(addr)

    # ------------------------------------------------------------------------ conversations
    def conversation(self, addr: Address) -> Conversation:
        conv = self.conversations.get(addr)
        if conv is None:
            label = f"{self.name} {self._describe(addr)}"
            conv = Conversation(
                label,
                send=self._sender(addr),
                on_message=lambda msg, a=addr: self._on_message(a, msg),
                on_malformed=lambda bad, raw, a=addr: self._on_malformed(a, bad, raw),
                on_report=lambda report, a=addr: self._on_report(a, report),
                tuning=self.tuning,
                limit=self.limit,
                rigdeck_wire=self.rigdeck_wire,
                tags=self.rigdeck_tags,
            )
            self.conversations[addr] = conv
        return conv

    def _resolve_addr(self, addr: Address | None) -> Address:
        target = addr if addr is not None else self._default_addr()
        if target is None:
            raise ValueError(f"{self.name}: a server-role endpoint needs the peer address (addr=...)")
        return target

    # ------------------------------------------------------------------------ incoming
    def _on_malformed(self, addr: Address, bad: Malformed, raw: bytes) -> None:
        self._rlog.warning(f"malformed {addr}", "%s: malformed message from %s: %s", self.name,
                           self._describe(addr), bad.reason)
        if self.service is not None and not bad.reason.startswith(("not UTF-8", "empty")):
            # a server explains what was wrong; clients only log (error reports are never answered)
            self._send_to(addr, ibl_wire.error_report(f"ValueError: {bad.reason}", bad.event))

    def _on_message(self, addr: Address, msg: Message) -> None:
        if self.service is not None:
            lock = self._serve_locks.get(addr)
            if lock is None or not lock.locked():
                self._serve_eagerly(addr, msg)
            else:
                self._spawn(self._serve(addr, msg))
        else:
            self._dispatch_callbacks(addr, msg)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _serve_eagerly(self, addr: Address, msg: Message) -> None:
        """Start the handler right here and make it a task only if it actually waits for something.

        Most rig messages (EXPSTATUS above all) are answered without awaiting anything; running them
        inline saves a task and a loop iteration per message, a good part of a reply's latency."""
        start_eagerly(self._serve(addr, msg), self._spawn)

    async def _serve(self, addr: Address, msg: Message) -> None:
        lock = self._serve_locks.get(addr)
        if lock is None:
            lock = self._serve_locks[addr] = asyncio.Lock()
        async with lock:  # one peer's messages are handled in the order they came
            try:
                reply = await self.service.handle(msg.event, list(msg.data), self._describe(addr))
                raw = ibl_wire.encode(msg.event, *(reply or []), limit=self.limit)
            except asyncio.CancelledError:
                raise
            except Exception as ex:  # the rig answers an error report and keeps serving
                log.info("%s: %s from %s failed: %s", self.name, msg.event.name, self._describe(addr),
                         error_text(ex))
                raw = ibl_wire.error_report(error_text(ex), int(msg.event))
            else:
                if ibl_wire.is_one_way(msg.event, msg.data):
                    return  # a token delivery: iblutil senders wait for no reply, and choke on one
            if not self.closed:  # (a reply's echo is recognised, not awaited; a report is never echoed)
                self.conversation(addr).reply(msg, raw)

    def _dispatch_callbacks(self, addr: Address, msg: Message) -> None:
        self._run_callbacks(int(msg.event), msg.data, addr, msg.event)

    def _on_report(self, addr: Address, report: ErrorReport) -> None:
        """An error report nothing of ours was waiting for: iblutil hands it to event-0 callbacks."""
        self._run_callbacks(0, [report.text, report.event], addr, ExpMessage(0))

    def _run_callbacks(self, code: int, data: list[Any], addr: Address, event: ExpMessage) -> None:
        """iblutil's dispatch: futures resolve once (and leave every event they waited on, so none go
        stale); a failing callback is answered ``[0, "Type: message", event]`` and ends the round."""
        entries = self._callbacks.get(code)
        if not entries:
            log.debug("%s: no callback for %s from %s", self.name, event.name or "error report",
                      self._describe(addr))
            return
        for cb, return_event in list(entries):
            args = (data, addr, event) if return_event else (data, addr)
            if isinstance(cb, asyncio.Future):
                if not cb.done():
                    cb.set_result(args)
                self._forget(cb)
                continue
            try:
                cb(*args)
            except Exception as ex:
                log.exception("%s: callback for %s failed", self.name, event.name or "error report")
                if code:  # never answer an error report with another
                    self._send_to(addr, ibl_wire.error_report(error_text(ex), code))
                return

    def _forget(self, callback: Callback) -> None:
        for code in list(self._callbacks):
            self._callbacks[code] = [e for e in self._callbacks[code] if e[0] is not callback]
            if not self._callbacks[code]:
                del self._callbacks[code]

    @staticmethod
    def _codes(event: Any) -> tuple[list[int], bool]:
        """The single event codes of ``event`` and whether it is compound; 0 / False mean error reports."""
        if event is False or (is_int(event) and int(event) == 0):
            return [0], False
        flag = int(ExpMessage.validate(event))
        return [bit for bit in (1 << i for i in range(8)) if flag & bit], flag.bit_count() > 1

    # ------------------------------------------------------------------------ RigDeck requests
    async def request(self, event: ExpMessage, *data: Any, addr: Address | None = None,
                      timeout: float = 5.0) -> list[Any]:
        """Request/reply with the exact wire shapes of iblutil (see :class:`Conversation`). An Alyx token
        delivery is one-way, as in iblutil: confirmed by its echo, answered here with ``[base_url, {}]``."""
        conversation = self.conversation(self._resolve_addr(addr))
        event = event if type(event) is ExpMessage else ExpMessage(event)
        values = list(data)
        if ibl_wire.is_one_way(event, values):
            await conversation.deliver(event, values, timeout)
            return [data[0], {}]
        return await conversation.request(event, values, timeout)

    # ------------------------------------------------------------------------ iblutil Communicator API
    def assign_callback(self, event: Any, callback: Callback) -> None:
        """Call ``callback(data, addr)`` (or resolve a future with it) for every message of ``event``;
        ``(data, addr, event)`` for a compound event (on every Python, unlike iblutil on 3.12+). Event 0
        gets the peer's error reports (``data = [text, event]``) that no request of ours was waiting for."""
        if not (callable(callback) or isinstance(callback, asyncio.Future)):
            raise TypeError("Callback must be callable or a Future")
        codes, compound = self._codes(event)
        for code in codes:
            self._callbacks.setdefault(code, []).append((callback, compound))

    def clear_callbacks(self, event: Any, callback: Callback | None = None, cancel_futures: bool = True) -> int:
        """Remove the callbacks of each event in ``event`` (or just ``callback``); returns how many
        registrations were removed, counted per event as iblutil does."""
        codes, _ = self._codes(event)
        removed = 0
        for code in codes:
            entries = self._callbacks.get(code, [])
            gone = [e for e in entries if callback is None or e[0] is callback]
            for cb, _ in gone:
                entries.remove((cb, _))
                if cancel_futures and isinstance(cb, asyncio.Future) and not cb.done():
                    cb.cancel()
            removed += len(gone)
            if not entries:
                self._callbacks.pop(code, None)
        return removed

    async def on_event(self, event: Any) -> tuple[Any, ...]:
        """Wait for the next message of ``event``: ``(data, addr)``, or ``(data, addr, event)`` for a
        compound event. The waiter is removed when it resolves or is cancelled (no stale futures)."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.assign_callback(event, fut)
        try:
            return await fut
        finally:
            self._forget(fut)

    def send(self, data: Any, addr: Address | None = None) -> None:
        """Unconfirmed send of a message (list/tuple, str or bytes)."""
        self.conversation(self._resolve_addr(addr)).send_unconfirmed(self._to_bytes(data))

    async def confirmed_send(self, data: Any, addr: Address | None = None, timeout: float | None = None) -> None:
        """Send and wait for the echo; a missing echo raises TimeoutError and closes nothing."""
        target = self._resolve_addr(addr)
        fut = self.conversation(target).send_confirmed(self._to_bytes(data))
        wait = timeout if timeout is not None else self.tuning.echo_timeout
        try:
            await asyncio.wait_for(fut, wait)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no echo from {self._describe(target)} within {wait:g} s") from None

    def _to_bytes(self, data: Any) -> bytes:
        if isinstance(data, bytes):
            raw = data
        elif isinstance(data, str):
            raw = data.encode()
        else:
            values = list(data)
            return ibl_wire.encode(values[0], *values[1:], limit=self.limit)
        if self.limit is not None and len(raw) > self.limit:
            raise ibl_wire.MessageTooLarge(f"message is {len(raw)} bytes, over the limit of {self.limit} bytes")
        return raw

    async def init(self, data: Any = None, addr: Address | None = None) -> None:
        await self.confirmed_send((ExpMessage.EXPINIT, data), addr)

    async def start(self, exp_ref: Any, data: Any = None, addr: Address | None = None) -> None:
        ref = format_exp_ref(exp_ref) if isinstance(exp_ref, dict) else (exp_ref or None)  # iblutil: '' -> null
        await self.confirmed_send((ExpMessage.EXPSTART, ref, data), addr)

    async def stop(self, data: Any = None, immediately: bool = False, addr: Address | None = None) -> None:
        event = ExpMessage.EXPINTERRUPT if immediately else ExpMessage.EXPEND
        await self.confirmed_send((event, data), addr)

    async def cleanup(self, data: Any = None, addr: Address | None = None) -> None:
        await self.confirmed_send((ExpMessage.EXPCLEANUP, data), addr)

    async def status(self, status: Any, addr: Address | None = None) -> None:
        await self.confirmed_send((ExpMessage.EXPSTATUS, int(ExpStatus.coerce(status))), addr)

    async def info(self, status: Any, data: Any = None, addr: Address | None = None) -> None:
        await self.confirmed_send((ExpMessage.EXPINFO, int(ExpStatus.coerce(status)), data), addr)

    async def alyx(self, alyx: Any = None, addr: Address | None = None, timeout: float | None = 30.0) -> Any:
        """iblutil's ``alyx``: with a logged-in ``alyx`` (ONE's AlyxClient: ``base_url``, ``user``,
        ``_token``, ``is_logged_in``) send ``[128, base_url, {user: token}]``; otherwise ask for one with
        ``[128, base_url|null, {}]`` and return the peer's reply data ``[base_url, {user: token}]``.
        Unlike iblutil, the wait for that reply ends after ``timeout`` seconds (TimeoutError)."""
        base_url = alyx.base_url if alyx else None
        token = {alyx.user: alyx._token} if alyx and getattr(alyx, "is_logged_in", True) else {}
        message = (ExpMessage.ALYX, base_url, token)
        if base_url and token:
            await self.confirmed_send(message, addr)
            return None
        reply: asyncio.Future = asyncio.get_running_loop().create_future()
        self.assign_callback(ExpMessage.ALYX, reply)  # before sending: the reply may come at once
        try:
            await self.confirmed_send(message, addr)
            try:
                data, _ = await asyncio.wait_for(reply, timeout)
            except TimeoutError:
                raise TimeoutError(f"{self.name}: no Alyx token from the peer within {timeout:g} s") from None
            return data
        finally:
            self._forget(reply)

    # ------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.closed = True
        for conv in self.conversations.values():
            conv.close()
        for task in list(self._tasks):
            task.cancel()
        for entries in self._callbacks.values():
            for cb, _ in entries:
                if isinstance(cb, asyncio.Future) and not cb.done():
                    cb.cancel()
        self._callbacks.clear()

    async def wait_closed(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
