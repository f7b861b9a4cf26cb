"""Console side of ``zmq://``: :class:`ZmqLink`, one DEALER per rig.

Commands: every command gets an id; it is resent with exponential backoff (``retry_initial`` doubling up
to ``retry_max``) until its REPLY arrives or its deadline passes. An ``ACK`` says the rig has it and is
working, so resends slow down to one per heartbeat (they then only ask for a reply that may have been
lost). The rig deduplicates by (sender, id), so a resent EXPSTART never runs twice. Each command names
the rig incarnation it was meant for (``to``): a rig that restarted refuses it instead of running it
blindly, and the caller gets a :class:`core.link.RemoteError` saying so.

Liveness: any message from the rig counts as a heartbeat; the rig sends ``HB`` when otherwise idle and
we send ``PING`` likewise. Silence for ``heartbeat * liveness`` seconds (0.5 s x 3 by default) marks the
link UNREACHABLE. libzmq reconnects by itself with backoff (100 ms to 2 s); when the rig is heard again,
a new incarnation (its ``sender`` changed) or a stream we are not in step with triggers a resync.

State stream: a SNAPSHOT becomes an ``init`` mod and each MODS batch becomes its mods, emitted through
:meth:`RigLink.emit_update` relative to the rig's own tree; ``published`` mirrors that tree. A gap in
sequence numbers (lost or reordered batch) asks for a new snapshot; duplicates and stale batches are
skipped. Counters in :attr:`ZmqLink.stats` say what happened, including what the rig reported dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from core.checks import is_int
from core.config import RigSpec
from core.link import LinkClosed, LinkState, RemoteError, RequestTimeout, RigError, RigLink, UpdateListener
from core.listeners import Unsubscribe
from core.protocol import ExpMessage
from core.state import MOD_ACTIONS, process_mod
from transports.rate_log import RateLimitedLog
from transports.zmq import files as zmq_files
from transports.zmq import keys as zmq_keys
from transports.zmq.sockets import HEARTBEAT, LIVENESS, Pump, tcp_endpoint, tune
from transports.zmq.wire import (
    ACK,
    BYE,
    CMD,
    FETCH,
    FILES,
    HB,
    HELLO,
    MODS,
    PING,
    REPLY,
    RIG_KEYS,
    SNAPSHOT,
    SYNC,
    Envelope,
    WireError,
    decode,
    encode,
)

log = logging.getLogger(__name__)

#: single events by code: a request looks its event up instead of validating through the enum each time
_EVENTS = {int(member): member for member in ExpMessage}

DEFAULTS: dict[str, Any] = {
    "timeout": 5.0,
    "heartbeat": HEARTBEAT,
    "liveness": LIVENESS,
    "retry_initial": 0.1,
    "retry_max": 1.0,
    "hwm": 1000,
    "stream": True,
}

#: after a refused CURVE handshake, dial again after 0.5 s, doubling up to 8 s
REDIAL_INITIAL, REDIAL_MAX = 0.5, 8.0

_MONITOR_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                   | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)


@dataclass
class _Pending:
    id: int
    key: str
    frames: list[bytes]
    future: asyncio.Future[Envelope]
    deadline: float
    first_sent: float
    next_send: float
    backoff: float
    sends: int = 1
    acked: bool = False


@dataclass
class _Stream:
    synced: bool = False
    seq: int = 0
    sync_asked: float = 0.0
    rig_dropped: int = 0
    history: list[str] = field(default_factory=list)  # earlier incarnations of the rig: ignore stragglers


class ZmqLink(RigLink):
    """A RigDeck rig service over ZeroMQ (see the module docstring). Options from remote_rigs.yaml:
    ``timeout``, ``server_key`` (the rig's public ``.key`` file: turns CURVE on), ``client_key`` (our
    ``.key_secret``; default ``<keys dir>/console.key_secret``), ``heartbeat``, ``liveness``,
    ``retry_initial``, ``retry_max``, ``hwm``, ``stream`` (false: commands only)."""

    pushes_status = True
    exactly_once = True

    def __init__(self, spec: RigSpec, blobs_by_reference: bool = False) -> None:
        super().__init__(spec.name, spec.uri)
        self.spec = spec
        #: binary frames (file chunks) kept in libzmq's buffer, not copied: see ``Pump``
        self.blobs_by_reference = blobs_by_reference
        self.options = {**DEFAULTS, **dict(spec.options)}
        self.timeout = float(self.options["timeout"])
        self.heartbeat = float(self.options["heartbeat"])
        self.liveness = float(self.options["liveness"])
        self.retry_initial = float(self.options["retry_initial"])
        self.retry_max = float(self.options["retry_max"])
        self.want_stream = bool(self.options["stream"])
        self.sender = f"{platform.node() or 'console'}/{spec.name}"[:150] + f"#{uuid.uuid4().hex[:12]}"
        self.rig_sender: str | None = None
        self.published: Any = None
        self.stats: dict[str, int] = {
            "commands": 0, "sends": 0, "resends": 0, "send_refused": 0, "acks": 0, "duplicate_replies": 0,
            "bad_frames": 0, "snapshots": 0, "mods": 0, "gaps": 0, "stale_batches": 0, "rig_restarts": 0,
            "rig_dropped": 0,
        }
        self._sock: zmq.asyncio.Socket | None = None
        self._pump: Pump | None = None
        self._rlog = RateLimitedLog(log, interval=5.0)
        self._monitor: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._last_sent = 0.0
        self._last_heard = 0.0
        self._connected_at = 0.0
        self._ready: asyncio.Event | None = None
        self._stream = _Stream()
        self._closed = False
        self._auth_error: str | None = None
        self._hello_sent = False
        self._endpoint = ""
        self._redial: asyncio.TimerHandle | None = None
        self._redial_delay = REDIAL_INITIAL

    def on_update(self, listener: UpdateListener) -> Unsubscribe:
        """Subscribe to the rig's state; a listener that arrives after the snapshot gets it replayed at once.

        Why: the console connects its links before it builds a session (or a GUI model) on them; without
        the replay such a late subscriber would see nothing until the rig's next change, and a rig that
        pushes its status is never polled for it.
        """
        unsubscribe = super().on_update(listener)
        if self._stream.synced and self.published is not None:
            try:
                listener({"action": "init", "struct": copy.deepcopy(self.published)})
            except Exception:
                log.exception("link update listener failed for %s", self.name)
        return unsubscribe

    @property
    def rig_epoch(self) -> str | None:
        return self.rig_sender.rpartition("#")[2] if self.rig_sender else None

    # ---------------------------------------------------------------------------------------- lifecycle
    async def connect(self) -> None:
        if self._sock is not None:
            return
        if self._closed:
            raise LinkClosed(f"{self.name}: link was closed")
        ctx = zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        tune(sock, hwm=int(self.options["hwm"]), heartbeat_ms=int(self.heartbeat * 1000), dealer=True)
        host = self.spec.address.host
        if ":" in host:
            sock.setsockopt(zmq.IPV6, 1)
        if self.options.get("server_key"):
            try:
                server_public = zmq_keys.load_public(self.spec.path_option("server_key"))
                client_file = self.spec.path_option("client_key") or (
                    zmq_keys.default_keys_dir() / f"{zmq_keys.DEFAULT_CONSOLE_KEY}{zmq_keys.SECRET_SUFFIX}")
                public, secret = zmq_keys.load_secret(client_file)
            except zmq_keys.KeyFileError as ex:
                sock.close(0)
                self.set_state(LinkState.UNREACHABLE, f"CURVE keys: {ex}")
                raise RigError(f"{self.name}: CURVE keys: {ex}") from None
            sock.curve_serverkey = server_public
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        self._monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        self._endpoint = tcp_endpoint(host, self.spec.address.port)
        sock.connect(self._endpoint)
        self._sock = sock
        self._pump = Pump(sock, self._on_frames, self.name, by_reference=self.blobs_by_reference)
        self._pump.start()
        self._ready = asyncio.Event()
        self._connected_at = time.monotonic()
        self.set_state(LinkState.CONNECTING)
        self._tasks = [asyncio.create_task(self._timer_loop(), name=f"zmq-{self.name}-timer"),
                       asyncio.create_task(self._monitor_loop(), name=f"zmq-{self.name}-monitor")]
        self._send_control(HELLO, {"stream": self.want_stream})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._redial is not None:
            self._redial.cancel()
        if self._sock is not None:
            self._send_control(BYE)
        if self._pump is not None:
            self._pump.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(LinkClosed(f"{self.name}: link closed"))
        self._pending.clear()
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor() if self._sock is not None else None
            self._monitor.close(0)
        if self._sock is not None:
            self._sock.close(0)
        self.set_state(LinkState.CLOSED)

    # ------------------------------------------------------------------------------------------ sending
    def _envelope(self, key: str, value: Any = None, to: str | None = None) -> Envelope:
        self._next_id += 1
        return Envelope(self._next_id, self.sender, key, value, time.time(), to)

    def _send(self, frames: list[bytes]) -> bool:
        if self._pump is None:
            return False
        self.stats["sends"] += 1
        if self._pump.send(frames):
            self._last_sent = time.monotonic()
            return True
        self.stats["send_refused"] += 1  # rig not connected (IMMEDIATE) or HWM: the resend timer retries
        return False

    def _send_control(self, key: str, value: Any = None) -> bool:
        ok = self._send(encode(self._envelope(key, value)))
        if ok and key == HELLO:
            self._hello_sent = True
        return ok

    async def _call(self, key: str, value: Any, timeout: float, to: str | None = None) -> Envelope:
        """Send one request and wait for its REPLY envelope, resending until ``timeout``."""
        if self._closed or self._sock is None:
            raise LinkClosed(f"{self.name}: link is {'closed' if self._closed else 'not connected'}")
        env = self._envelope(key, value, to)
        try:
            frames = encode(env)
        except WireError as ex:
            raise RigError(f"{self.name}: {ex}") from None
        now = time.monotonic()
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        pending = _Pending(env.id, key, frames, future, now + timeout, now, now + self.retry_initial,
                           self.retry_initial)
        self._pending[env.id] = pending
        self._send(frames)
        try:
            return await future
        finally:
            self._pending.pop(env.id, None)

    async def _wait_ready(self, deadline: float) -> None:
        assert self._ready is not None
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise RequestTimeout(f"{self.name}: rig at {self.uri} never answered "
                                 f"({self._auth_error or self.last_error or 'not reachable'})") from None

    async def request(self, event: ExpMessage, *data: Any, timeout: float | None = None) -> list[Any]:
        event = _EVENTS.get(event) or ExpMessage.validate(event, allow_bitwise=False)  # type: ignore[call-overload]
        timeout = self.timeout if timeout is None else float(timeout)
        if self._sock is None and not self._closed:
            await self.connect()
        deadline = time.monotonic() + timeout
        if self._ready is None:
            raise LinkClosed(f"{self.name}: link was closed")
        if not self._ready.is_set():
            await self._wait_ready(deadline)
        self.stats["commands"] += 1
        reply = await self._call(CMD, {"event": int(event), "data": list(data)},
                                 max(0.0, deadline - time.monotonic()), to=self.rig_epoch)
        value = reply.value
        if "error" in value:
            raise RemoteError(str(value["error"]), int(event))
        result = value.get("data")
        return list(result) if isinstance(result, list) else [result]

    async def _file_request(self, key: str, value: dict[str, Any]) -> tuple[Any, bytes | None]:
        deadline = time.monotonic() + self.timeout
        if self._sock is None and not self._closed:
            await self.connect()
        await self._wait_ready(deadline)
        reply = await self._call(key, value, max(0.0, deadline - time.monotonic()))
        if "error" in reply.value:
            raise RemoteError(str(reply.value["error"]))
        return reply.value.get("data"), reply.blob

    # -------------------------------------------------------------------------------------------- files
    async def list_files(self, prefix: str = "") -> list[zmq_files.RemoteFile]:
        """The rig's files below ``prefix`` of its data folder (relative paths, sizes, SHA-256)."""
        return await zmq_files.list_files(self._file_request, prefix)

    async def fetch_files(self, dest_dir: str | Path, files: list[zmq_files.RemoteFile] | None = None,
                          prefix: str = "", progress: zmq_files.Progress | None = None,
                          chunk_size: int = zmq_files.DEFAULT_CHUNK, attempts: int = 3,
                          count: zmq_files.FetchCount | None = None) -> list[Path]:
        """Fetch ``files`` (default: all below ``prefix``) into ``dest_dir``; see :mod:`transports.zmq.files`."""
        if files is None:
            files = await self.list_files(prefix)
        return await zmq_files.fetch_files(self._file_request, dest_dir, files, progress, chunk_size, attempts,
                                           count)

    async def mark_transferred(self, prefix: str, files: list[zmq_files.RemoteFile]) -> dict[str, Any]:
        """Ask the rig to record these files of session folder ``prefix`` as transferred and verified."""
        return await zmq_files.mark_transferred(self._file_request, prefix, files, self.sender.split("#")[0])

    # ---------------------------------------------------------------------------------------- receiving
    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            env = decode(frames, RIG_KEYS)
        except WireError as ex:
            self.stats["bad_frames"] += 1
            self._rlog.warning("bad", "%s: ignored a bad message from the rig: %s", self.name, ex)
            return
        if env.sender in self._stream.history:
            return  # a straggler from before the rig restarted
        if env.sender != self.rig_sender:
            self._new_incarnation(env.sender)
        now = time.monotonic()
        self._last_heard = now
        self.note_heard()  # every frame counts, heartbeats included ("last heard" is about the rig, not replies)
        if self.state is not LinkState.ONLINE:
            self._auth_error = None
            self.set_state(LinkState.ONLINE)
        key = env.key
        if key in (REPLY, ACK):
            self._on_reply(env, now)
        elif key == SNAPSHOT:
            self._on_snapshot(env)
        elif key == MODS:
            self._on_mods(env)
        elif key == HB and self.want_stream:
            self._on_heartbeat(env, now)

    def _new_incarnation(self, sender: str) -> None:
        previous = self.rig_sender
        if previous is not None:
            self.stats["rig_restarts"] += 1
            log.warning("%s: rig restarted (%s -> %s); resynchronising its state", self.name,
                        self.rig_sender.rpartition("#")[2], sender.rpartition("#")[2])
            self._stream.history = [*self._stream.history[-7:], self.rig_sender]
        self.rig_sender = sender
        self._stream.synced = False
        # our HELLO (answered by this very message) already asked for a snapshot: a heartbeat that overtakes
        # the snapshot must not ask for a second one
        self._stream.sync_asked = time.monotonic()
        if self._ready is not None:
            self._ready.set()
        if previous is not None and self.want_stream:  # first contact answered our HELLO already
            self._send_control(HELLO, {"stream": True})

    def _on_reply(self, env: Envelope, now: float) -> None:
        value = env.value
        if not isinstance(value, dict) or isinstance(value.get("re"), bool) or not isinstance(value.get("re"), int):
            self.stats["bad_frames"] += 1
            return
        if env.key == REPLY and "error" not in value and "data" not in value:
            self.stats["bad_frames"] += 1
            return
        pending = self._pending.get(value["re"])
        if pending is None or pending.future.done():
            if env.key == REPLY:
                self.stats["duplicate_replies"] += 1
            return
        if env.key == ACK:
            self.stats["acks"] += 1
            pending.acked = True
            pending.next_send = now + max(pending.backoff, self.heartbeat)
            if pending.key in (FILES, FETCH):  # the rig is working on it (checksums of a big session): wait
                pending.deadline = max(pending.deadline, now + self.timeout)
            return
        self._pending.pop(pending.id, None)
        pending.future.set_result(env)
        if pending.key == CMD:
            self.note_reply(now - pending.first_sent)

    def _on_heartbeat(self, env: Envelope, now: float) -> None:
        stream = self._stream
        if not stream.synced:
            self._ask_sync(now)
            return
        value = env.value
        seq = value.get("seq") if isinstance(value, dict) else None
        if is_int(seq) and seq > stream.seq:
            self.stats["gaps"] += 1  # the rig sent changes we never got (a lost last batch)
            log.info("%s: state stream behind (have %d, rig sent up to %d); asking for a snapshot", self.name,
                     stream.seq, seq)
            self._resync()

    def _ask_sync(self, now: float) -> None:
        if now - self._stream.sync_asked >= self.heartbeat:  # at most one request in flight per heartbeat
            self._stream.sync_asked = now
            self._send_control(SYNC)

    def _on_snapshot(self, env: Envelope) -> None:
        value = env.value
        if not isinstance(value, dict) or isinstance(value.get("seq"), bool) or not isinstance(value.get("seq"), int):
            self.stats["bad_frames"] += 1
            return
        stream = self._stream
        if stream.synced and value["seq"] <= stream.seq:
            self.stats["stale_batches"] += 1  # an older snapshot overtaken by what we already have
            return
        struct = value.get("struct")
        stream.synced, stream.seq = True, value["seq"]
        self.stats["snapshots"] += 1
        self._note_dropped(value)
        self.published = copy.deepcopy(struct)  # our mirror must not alias what listeners were given
        self.emit_update({"action": "init", "struct": struct})

    def _on_mods(self, env: Envelope) -> None:
        value = env.value
        stream = self._stream
        if (not isinstance(value, dict) or isinstance(value.get("first"), bool)
                or not isinstance(value.get("first"), int) or not isinstance(value.get("mods"), list)):
            self.stats["bad_frames"] += 1
            return
        if not stream.synced:
            return  # waiting for a snapshot; it will include these
        first, mods = value["first"], value["mods"]
        last = first + len(mods) - 1
        if last <= stream.seq:
            self.stats["stale_batches"] += 1
            return
        if first > stream.seq + 1:
            self.stats["gaps"] += 1
            log.info("%s: state stream gap (have %d, got %d..%d); asking for a snapshot", self.name, stream.seq,
                     first, last)
            self._resync()
            return
        self._note_dropped(value)
        for mod in mods[stream.seq + 1 - first:]:
            if not isinstance(mod, dict) or mod.get("action") not in MOD_ACTIONS:
                self.stats["bad_frames"] += 1
                self._resync()
                return
            mirrored = mod
            for name in ("value", "x", "struct"):
                if isinstance(mod.get(name), dict | list):
                    mirrored = {**mirrored, name: copy.deepcopy(mod[name])}
            try:
                self.published = process_mod(self.published, mirrored)
            except Exception as ex:  # our mirror and the rig disagree: start again from a snapshot
                log.info("%s: state mod did not apply (%s); resynchronising", self.name, ex)
                self._resync()
                return
            stream.seq += 1
            self.stats["mods"] += 1
            self.emit_update(mod)

    def _resync(self) -> None:
        self._stream.synced = False
        self._stream.sync_asked = 0.0
        self._ask_sync(time.monotonic())

    def _note_dropped(self, value: dict[str, Any]) -> None:
        dropped = value.get("dropped")
        if is_int(dropped) and dropped > self._stream.rig_dropped:
            log.warning("%s: the rig dropped %d state change(s) it could not send us (%d in all); resynchronised",
                        self.name, dropped - self._stream.rig_dropped, dropped)
            self._stream.rig_dropped = dropped
            self.stats["rig_dropped"] = dropped

    # ------------------------------------------------------------------------------------ timers, liveness
    async def _timer_loop(self) -> None:
        while True:
            now = time.monotonic()
            next_due = now + self.heartbeat / 4
            for pending in list(self._pending.values()):
                if pending.future.done():
                    continue
                if now >= pending.deadline:
                    pending.future.set_exception(RequestTimeout(
                        f"{self.name}: no reply to {pending.key} {pending.id} within "
                        f"{pending.deadline - pending.first_sent:.1f} s ({pending.sends} send(s); link "
                        f"{self.state.value}{': ' + self.last_error if self.last_error else ''})"))
                    continue
                if now >= pending.next_send:
                    pending.sends += 1
                    self.stats["resends"] += 1
                    self._send(pending.frames)
                    pending.backoff = min(pending.backoff * 2, self.retry_max)
                    pending.next_send = now + (max(pending.backoff, self.heartbeat) if pending.acked
                                               else pending.backoff)
                next_due = min(next_due, pending.next_send, pending.deadline)
            if now - self._last_sent >= self.heartbeat:
                if self.rig_sender is None or (self.want_stream and not self._stream.synced
                                               and now - self._stream.sync_asked >= self.heartbeat):
                    self._stream.sync_asked = now
                    self._send_control(HELLO, {"stream": self.want_stream})
                else:
                    self._send_control(PING)
            limit = self.heartbeat * self.liveness
            heard = self._last_heard or self._connected_at
            if self.state in (LinkState.ONLINE, LinkState.CONNECTING):
                if now - heard > limit:
                    why = self._auth_error or (f"no traffic from the rig for {now - heard:.1f} s" if self._last_heard
                                               else f"rig at {self.uri} not answering")
                    self.set_state(LinkState.UNREACHABLE, why)
                else:
                    next_due = min(next_due, heard + limit + 0.001)  # notice silence on time, not a tick late
            await asyncio.sleep(min(max(next_due - time.monotonic(), 0.002), self.heartbeat / 4))

    async def _monitor_loop(self) -> None:
        assert self._monitor is not None
        while True:
            try:
                msg = parse_monitor_message(await self._monitor.recv_multipart())
            except asyncio.CancelledError:
                raise
            except (zmq.ZMQError, ValueError, KeyError):
                return
            event = msg.get("event")
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # (re)connected: introduce ourselves at once
                self._redial_delay = REDIAL_INITIAL
                if not self._hello_sent:
                    self._stream.sync_asked = time.monotonic()
                    self._send_control(HELLO, {"stream": self.want_stream})
                continue
            if event == zmq.EVENT_DISCONNECTED:  # the rig's process died or closed: no need to wait 1.5 s
                self._hello_sent = False
                if self.state is LinkState.ONLINE:
                    self.set_state(LinkState.UNREACHABLE, "connection to the rig lost; reconnecting")
                continue
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._auth_error = "the rig refused our CURVE key (ask its operator to run 'rigdeck keys allow')"
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._auth_error = "security handshake failed (wrong server_key, or CURVE on one side only?)"
            else:
                continue
            log.warning("%s: %s; trying again in %.1f s", self.name, self._auth_error, self._redial_delay)
            if self.state is not LinkState.ONLINE:
                self.set_state(LinkState.UNREACHABLE, self._auth_error)
            self._schedule_redial()

    def _schedule_redial(self) -> None:
        """Dial again after a refused handshake: libzmq treats one as final and would never retry, but the
        rig's operator may be about to run ``rigdeck keys allow`` (re-read by the rig without a restart)."""
        if self._redial is None and not self._closed:
            self._redial = asyncio.get_running_loop().call_later(self._redial_delay, self._dial_again)
            self._redial_delay = min(self._redial_delay * 2, REDIAL_MAX)

    def _dial_again(self) -> None:
        self._redial = None
        if self._closed or self._sock is None:
            return
        with contextlib.suppress(zmq.ZMQError):  # the failed connection may be gone already
            self._sock.disconnect(self._endpoint)
        self._sock.connect(self._endpoint)
