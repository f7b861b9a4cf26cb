"""Rig side of ``zmq://``: one ROUTER hosting a rig service for any number of consoles.

Why one ROUTER for commands *and* the state stream (instead of the Clone pattern's PUB + ROUTER pair):
a console needs back-chatter anyway (snapshot requests, resync after a gap), a single port means one
CURVE handshake and one firewall rule, and a ROUTER, unlike PUB, lets us count exactly what a slow
console could not take. Per console the rig keeps a small :class:`Peer` record.

Exactly once: a command is keyed by ``(sender, id)``. The first copy runs (commands run one at a time,
in arrival order, as on an iblutil rig); a copy that arrives while it runs is answered ``ACK``; a copy
that arrives after it finished gets the cached reply. The cache is bounded (``dedupe_limit`` replies);
per sender the highest evicted id is remembered, so an ancient duplicate is refused ("expired"), never
run again. Commands addressed (``to``) to an earlier incarnation of the rig are refused too.

Dead consoles: any message counts as a heartbeat; a console silent for ``heartbeat * liveness`` seconds
is logged as lost and nothing more is queued for it — the rig keeps running and recording. It is forgotten
after ``forget_after`` seconds. State stream: every mod of ``service.state`` gets a sequence number and
goes to each streaming console's bounded queue, flushed every ``batch_interval`` in batches of at most
``batch_max`` mods; a queue over ``queue_limit`` (or a refused send) is dropped, counted, logged and
replaced by a fresh snapshot, so a console is never left silently inconsistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from core.link import error_text
from core.peers import peer_text
from core.protocol import ExpMessage, RigAddress
from core.state import Mod
from transports.conn_limits import DEFAULT_HANDSHAKE_TIMEOUT, ConnectionGuard
from transports.eager import start_eagerly
from transports.rate_log import RateLimitedLog
from transports.zmq import keys as zmq_keys
from transports.zmq.conn_cap import ZmqConnectionCap
from transports.zmq.file_store import FileStore
from transports.zmq.sockets import HEARTBEAT, LIVENESS, Pump, tcp_endpoint, tune
from transports.zmq.wire import (
    ACK,
    BYE,
    CMD,
    CONSOLE_KEYS,
    FETCH,
    FILES,
    HB,
    HELLO,
    MARK,
    REPLY,
    SYNC,
    Envelope,
    WireError,
    decode,
    encode,
    encode_mods,
    encode_snapshot,
    require_dict,
    state_json,
)

log = logging.getLogger(__name__)

#: seconds between the ACKs of a file request still being worked on (the console's file link waits as long
#: as they come)
FILES_ACK_EVERY = 2.0

#: single events by code: the command path looks them up instead of validating through the enum each time
_EVENTS = {int(member): member for member in ExpMessage}

DEFAULTS: dict[str, Any] = {
    "heartbeat": HEARTBEAT,
    "liveness": LIVENESS,
    "forget_after": 30.0,
    "max_peers": 64,
    "dedupe_limit": 4096,
    "ack_after": 0.02,
    "batch_interval": 0.02,
    "batch_max": 500,
    "queue_limit": 10000,
    "hwm": 1000,
    # a connection that has not finished ZMTP's greeting (and CURVE's, with keys) in this many seconds is
    # closed by libzmq; after it ZMTP heartbeats close a dead peer, and a live silent console is a console
    "handshake_timeout": DEFAULT_HANDSHAKE_TIMEOUT,
}


@dataclass
class Peer:
    """One console as the rig sees it."""

    sender: str
    routing: bytes
    last_seen: float
    last_sent: float = 0.0
    lost: bool = False
    streaming: bool = False
    needs_snapshot: bool = False
    queue: list[str] = field(default_factory=list)  # JSON-encoded mods, consecutive from first_seq
    first_seq: int = 0
    dropped: int = 0
    lost_since: float = 0.0
    host: str | None = None  # the IP address its last message came from (never its self-chosen name)


class DedupeCache:
    """Replies of finished commands by (sender, id), bounded; running commands marked as such."""

    RUNNING = object()

    def __init__(self, limit: int) -> None:
        self.limit = max(16, int(limit))
        self.entries: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self.floor: OrderedDict[str, int] = OrderedDict()  # per sender: highest id evicted

    def get(self, key: tuple[str, int]) -> Any:
        return self.entries.get(key)

    def expired(self, key: tuple[str, int]) -> bool:
        return key not in self.entries and key[1] <= self.floor.get(key[0], -1)

    def start(self, key: tuple[str, int]) -> None:
        self.entries[key] = self.RUNNING
        self._trim()

    def finish(self, key: tuple[str, int], reply: list[bytes]) -> None:
        self.entries[key] = reply

    def _trim(self) -> None:
        while len(self.entries) > self.limit:
            key, value = next(iter(self.entries.items()))
            if value is self.RUNNING:  # never forget a command still running; look at it again later
                self.entries.move_to_end(key)
                if all(v is self.RUNNING for v in self.entries.values()):
                    return
                continue
            del self.entries[key]
            sender, msg_id = key
            self.floor[sender] = max(self.floor.get(sender, -1), msg_id)
            self.floor.move_to_end(sender)
            while len(self.floor) > 4 * self.limit:
                self.floor.popitem(last=False)


class ZmqServer:
    """A rig service on a ROUTER socket (see the module docstring)."""

    def __init__(self, service: Any, options: dict[str, Any] | None = None) -> None:
        self.service = service
        self.options = {**DEFAULTS, **(options or {})}
        self.name = str(getattr(service, "name", None) or self.options.get("name") or "rig")
        self.epoch = uuid.uuid4().hex[:12]
        self.sender = f"{self.name}#{self.epoch}"
        self.heartbeat = float(self.options["heartbeat"])
        self.liveness = float(self.options["liveness"])
        self.peers: dict[str, Peer] = {}
        self.cache = DedupeCache(int(self.options["dedupe_limit"]))
        self.stats: dict[str, int] = {
            "commands": 0, "duplicates": 0, "expired": 0, "bad_frames": 0, "mods": 0, "mods_dropped": 0,
            "snapshots": 0, "sends_refused": 0, "consoles_lost": 0, "files_requests": 0,
            "commands_refused": 0,
        }
        self.port = 0
        self.curve = False
        #: a file endpoint beside a rig's udp/tcp/rpc URI: files only, no commands, no state stream
        self.files_only = bool(self.options.get("files_only"))
        self.state = None if self.files_only else getattr(service, "state", None)
        data_dir = self.options.get("data_dir") or getattr(service, "data_dir", None)
        self.files = FileStore(data_dir) if data_dir else None
        self._ctx: zmq.asyncio.Context | None = None
        self._own_ctx = False
        self._auth: Any = None
        self.allow_list: zmq_keys.AllowList | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._pump: Pump | None = None
        self.cap: ZmqConnectionCap | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._running: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        self._next_id = 0
        self._seq = 0
        self._unsubscribe: Any = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._rlog = RateLimitedLog(log, interval=5.0)
        self._closed = False

    # ---------------------------------------------------------------------------------------- lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        keys = self.options.get("keys")
        if keys:
            folder = Path(str(keys)).expanduser()
            key_name = self.options.get("key", zmq_keys.DEFAULT_RIG_KEY)
            secret_file = self.options.get("key_file") or folder / f"{key_name}{zmq_keys.SECRET_SUFFIX}"
            public, secret = zmq_keys.load_secret(secret_file)
            self.allow_list = zmq_keys.AllowList(folder)
            self._ctx, self._own_ctx = zmq.asyncio.Context(), True  # ZAP handlers are per context
            self._auth = zmq_keys.start_authenticator(self._ctx, self.allow_list)
            self.curve = True
        else:  # binds what it is asked: the rig file's binding rule (core.transport_spec) decided already
            self._ctx = zmq.asyncio.Context.instance()
        sock = self._ctx.socket(zmq.ROUTER)
        tune(sock, hwm=int(self.options["hwm"]), heartbeat_ms=int(self.heartbeat * 1000))
        # a ROUTER silently drops what a full (slow console) or vanished pipe cannot take; MANDATORY makes that
        # a refused send instead, so every lost state change is counted and healed with a snapshot
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, int(float(self.options["handshake_timeout"]) * 1000)))
        if ":" in host.strip("[]"):
            sock.setsockopt(zmq.IPV6, 1)
        if self.curve:
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
            sock.zap_domain = zmq_keys.ZAP_DOMAIN.encode("ascii")
        try:
            sock.bind(tcp_endpoint(host.strip("[]"), port))
        except zmq.ZMQError as ex:
            sock.close(0)
            await self._close_context()
            raise OSError(f"zmq rig {self.name}: cannot bind {host}:{port}: {ex}") from None
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.port = int(endpoint.rsplit(":", 1)[1])
        self._sock = sock
        guard = ConnectionGuard(f"zmq: rig {self.name}", self.options.get("max_connections"), handshake_timeout=None)
        self.cap = ZmqConnectionCap(sock, self.port, guard)
        if self.state is not None:
            self._unsubscribe = self.state.subscribe(self._on_mod)
        self._pump = Pump(sock, self._on_frames, f"zmq rig {self.name}", peer_address=True)
        self._pump.start()
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name=f"zmq-rig-{self.name}-hb")]
        log.info("zmq rig %s (%s) serving on %s:%s%s", self.name, self.epoch, host, self.port,
                 f", CURVE on, {len(self.allow_list)} console key(s) allowed" if self.allow_list else ", no CURVE")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe:
            self._unsubscribe()
        if self._flush_handle:
            self._flush_handle.cancel()
        if self._pump is not None:
            self._pump.stop()
        for task in [*self._tasks, *self._running]:
            task.cancel()
        for task in [*self._tasks, *self._running]:
            with contextlib.suppress(BaseException):
                await task
        if self.cap is not None:
            await self.cap.close()
        if self._sock is not None:
            self._sock.close(0)
        await self._close_context()

    async def _close_context(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.destroy(0)
        self._ctx = None

    # ------------------------------------------------------------------------------------------ sending
    def _send(self, peer: Peer, key: str, value: Any = None, blob: bytes | None = None) -> bool:
        self._next_id += 1
        return self._send_frames(peer, encode(Envelope(self._next_id, self.sender, key, value, time.time(),
                                                       blob=blob)))

    def _send_frames(self, peer: Peer, frames: list[bytes]) -> bool:
        if self._pump is None or self._closed:
            return False
        ok = self._pump.send([peer.routing, *frames])
        if ok:
            peer.last_sent = time.monotonic()
        else:
            self.stats["sends_refused"] += 1
        return ok

    def _warn(self, what: str, text: str, *args: Any) -> None:
        """Log at most one line per ``what`` per 5 s: a hostile or broken peer cannot flood the log."""
        self._rlog.warning(what, text, *args)

    # ---------------------------------------------------------------------------------------- receiving
    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            self._dispatch(frames)
        except Exception:  # never let one message stop the rig
            self.stats["bad_frames"] += 1
            log.exception("zmq rig %s: unexpected error handling a message", self.name)

    def _dispatch(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self.stats["bad_frames"] += 1
            return
        routing = frames[0]
        try:
            env = decode(frames[1:], CONSOLE_KEYS)
        except WireError as ex:
            self.stats["bad_frames"] += 1
            self._warn("bad", "zmq rig %s: ignored a bad message: %s", self.name, ex)
            return
        peer = self._peer(env.sender, routing)
        key = env.key
        if key == CMD and self.files_only:
            self.stats["commands_refused"] += 1
            self._send(peer, REPLY, {"re": env.id, "error": f"rig {self.name}: this endpoint serves session files "
                                                          "only; send session messages to the rig's own URI"})
        elif key == CMD:
            self._on_command(peer, env)
        elif key == HELLO:
            stream = not isinstance(env.value, dict) or env.value.get("stream", True) is not False
            peer.streaming = bool(stream and self.state is not None)
            peer.queue.clear()
            peer.needs_snapshot = peer.streaming
            self._send(peer, HB)  # tells the console our incarnation at once, even without a stream
            self._schedule_flush(0.0)
        elif key == SYNC:
            if self.state is not None:
                peer.streaming, peer.needs_snapshot = True, True
                peer.queue.clear()
                self._schedule_flush(0.0)
        elif key in (FILES, FETCH, MARK):
            self._on_files(peer, env)
        elif key == BYE:
            log.info("zmq rig %s: console %s said goodbye", self.name, peer.sender)
            self.peers.pop(peer.sender, None)
        # PING: nothing to do, being heard from is the point

    def _peer(self, sender: str, routing: bytes) -> Peer:
        now = time.monotonic()
        peer = self.peers.get(sender)
        if peer is None:
            if len(self.peers) >= int(self.options["max_peers"]):
                self._evict_peer()
            peer = self.peers[sender] = Peer(sender, routing, now)
            log.info("zmq rig %s: console %s connected", self.name, sender)
        peer.routing = routing  # a reconnected console has a new routing id
        peer.last_seen = now
        peer.host = self._pump.last_peer if self._pump is not None else None
        if peer.lost:
            peer.lost = False
            log.info("zmq rig %s: console %s is back after %.1f s", self.name, sender, now - peer.lost_since)
            if peer.streaming:
                peer.needs_snapshot = True
                self._schedule_flush(0.0)
        return peer

    def _evict_peer(self) -> None:
        victim = min(self.peers.values(), key=lambda p: (not p.lost, p.last_seen))
        self.peers.pop(victim.sender, None)

    # ----------------------------------------------------------------------------------------- commands
    def _on_command(self, peer: Peer, env: Envelope) -> None:
        key = (env.sender, env.id)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats["duplicates"] += 1
            if cached is DedupeCache.RUNNING:
                self._send(peer, ACK, {"re": env.id})
            else:
                self._send_frames(peer, cached)
            return
        if self.cache.expired(key):
            self.stats["expired"] += 1
            self._send(peer, REPLY, {"re": env.id, "error": f"Expired: command {env.id} is older than the rig's "
                                     "duplicate cache; it was not run again"})
            return
        if env.to is not None and env.to != self.epoch:
            self._send(peer, REPLY, {"re": env.id, "error": f"RigRestarted: command was meant for rig instance "
                                     f"{env.to}, this is {self.epoch}; not run (check the rig's state)"})
            return
        self.cache.start(key)
        self.stats["commands"] += 1
        # most commands finish without waiting for anything: run them here; only one that waits becomes a
        # task, and only then can it take long enough to need an ACK
        # the handler learns the console's address; its name is its own choice, so only a label
        task = start_eagerly(self._execute(env, peer_text(peer.host or "unknown", label=peer.sender)), self._spawn)
        if task is not None:
            asyncio.get_running_loop().call_later(float(self.options["ack_after"]), self._ack_if_running, key)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def _ack_if_running(self, key: tuple[str, int]) -> None:
        peer = self.peers.get(key[0])
        if peer is not None and self.cache.get(key) is DedupeCache.RUNNING:
            self._send(peer, ACK, {"re": key[1]})

    async def _execute(self, env: Envelope, who: str) -> None:
        reply: dict[str, Any]
        try:
            value = require_dict(env, "event")
            code = value["event"]
            event = _EVENTS.get(code) if type(code) is int else None
            if event is None:
                event = ExpMessage.validate(code, allow_bitwise=False)  # names, or the error saying why not
            data = value.get("data", [])
            if not isinstance(data, list):
                raise WireError(f"CMD data must be a list, not {type(data).__name__}")
            async with self._lock:
                result = await self.service.handle(event, data, who)
            reply = {"re": env.id, "data": list(result) if isinstance(result, list | tuple) else [result]}
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            log.info("zmq rig %s: command %s from %s failed: %s", self.name, env.id, env.sender, error_text(ex))
            reply = {"re": env.id, "error": error_text(ex)}
        self._next_id += 1
        try:
            frames = encode(Envelope(self._next_id, self.sender, REPLY, reply, time.time()))
        except WireError as ex:
            frames = encode(Envelope(self._next_id, self.sender, REPLY, {"re": env.id, "error": f"TypeError: {ex}"}))
        self.cache.finish((env.sender, env.id), frames)
        peer = self.peers.get(env.sender)
        if peer is not None:
            self._send_frames(peer, frames)

    # --------------------------------------------------------------------------------------------- files
    def _on_files(self, peer: Peer, env: Envelope) -> None:
        self.stats["files_requests"] += 1
        self._spawn(self._serve_files(peer.sender, env))

    async def _serve_files(self, sender: str, env: Envelope) -> None:
        blob = None
        loop = asyncio.get_running_loop()
        ack: asyncio.TimerHandle | None = None

        def acknowledge() -> None:
            """A long request (checksums of a big session, a slow disk) is acknowledged every few seconds: the
            console keeps waiting for a rig that is working, and gives up on one that is gone."""
            nonlocal ack
            peer = self.peers.get(sender)
            if peer is not None:
                self._send(peer, ACK, {"re": env.id})
            ack = loop.call_later(FILES_ACK_EVERY, acknowledge)

        try:
            if self.files is None:
                raise FileNotFoundError("this rig has no data folder to serve")
            ack = loop.call_later(FILES_ACK_EVERY, acknowledge)
            value, blob = await self.files.handle(env.key, require_dict(env))
            reply: dict[str, Any] = {"re": env.id, "data": value}
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            reply = {"re": env.id, "error": error_text(ex)}
        finally:
            if ack is not None:
                ack.cancel()
        peer = self.peers.get(sender)
        if peer is not None:
            self._send(peer, REPLY, reply, blob)

    # -------------------------------------------------------------------------------------- state stream
    def _on_mod(self, mod: Mod) -> None:
        self._seq += 1
        self.stats["mods"] += 1
        encoded: str | None = None
        limit = int(self.options["queue_limit"])
        for peer in self.peers.values():
            if not peer.streaming or peer.lost or peer.needs_snapshot:
                continue  # a snapshot will carry this change
            if encoded is None:
                try:
                    encoded = state_json(mod)
                except WireError as ex:  # a bug on the rig (a cycle in its state): resynchronise everyone
                    self._warn("state", "zmq rig %s: %s; consoles get a snapshot instead", self.name, ex)
                    self._drop(peer, len(peer.queue), "a change could not be encoded")
                    continue
            if not peer.queue:
                peer.first_seq = self._seq
            peer.queue.append(encoded)
            if len(peer.queue) > limit:
                self._drop(peer, len(peer.queue), "queue over its limit")
        if encoded is not None:
            self._schedule_flush(float(self.options["batch_interval"]))

    def _drop(self, peer: Peer, count: int, why: str) -> None:
        peer.dropped += count
        self.stats["mods_dropped"] += count
        peer.queue.clear()
        peer.needs_snapshot = True
        self._warn(f"drop-{peer.sender}", "zmq rig %s: dropped %d state change(s) for console %s (%s; %d in "
                   "all); it gets a fresh snapshot instead", self.name, count, peer.sender, why, peer.dropped)

    def _schedule_flush(self, delay: float) -> None:
        if self._flush_handle is not None:
            if delay > 0:
                return
            self._flush_handle.cancel()
        self._flush_handle = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batch_max = max(1, int(self.options["batch_max"]))
        for peer in list(self.peers.values()):
            if not peer.streaming or peer.lost:
                continue
            if peer.needs_snapshot:
                self._send_snapshot(peer)
                continue
            while peer.queue:
                batch, rest = peer.queue[:batch_max], peer.queue[batch_max:]
                self._next_id += 1
                # pre-encoded mods are spliced in: each was encoded once for every console
                frames = encode_mods(self._next_id, self.sender, peer.first_seq, batch, peer.dropped, time.time())
                if not self._send_frames(peer, frames):
                    self._drop(peer, len(peer.queue), "console not taking messages")
                    break
                peer.queue, peer.first_seq = rest, peer.first_seq + len(batch)

    def _send_snapshot(self, peer: Peer) -> None:
        assert self.state is not None
        self._next_id += 1
        try:
            frames = encode_snapshot(self._next_id, self.sender, self._seq, self.state.raw, peer.dropped, time.time())
        except WireError as ex:
            self._warn("state", "zmq rig %s: %s; not sent", self.name, ex)
            return
        peer.queue.clear()
        if self._send_frames(peer, frames):
            peer.needs_snapshot = False
            self.stats["snapshots"] += 1
        else:  # still congested: try again on the next heartbeat
            peer.needs_snapshot = True

    # ----------------------------------------------------------------------------------------- heartbeat
    def _heartbeat_value(self, peer: Peer) -> dict[str, int] | None:
        """``{"seq": n}``: the last state change sent to this console, so it notices a lost *final* batch
        (a gap is otherwise only seen when the next change arrives, which may be never)."""
        if not peer.streaming or peer.needs_snapshot:
            return None
        return {"seq": peer.first_seq - 1 if peer.queue else self._seq}

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat / 2)
            now = time.monotonic()
            silent_limit = self.heartbeat * self.liveness
            for peer in list(self.peers.values()):
                silent = now - peer.last_seen
                if not peer.lost and silent > silent_limit:
                    peer.lost, peer.lost_since = True, peer.last_seen
                    peer.queue.clear()
                    self.stats["consoles_lost"] += 1
                    log.warning("zmq rig %s: console %s silent for %.1f s, considered lost; the rig keeps running",
                                self.name, peer.sender, silent)
                if peer.lost:
                    if silent > float(self.options["forget_after"]):
                        self.peers.pop(peer.sender, None)
                    continue
                if peer.needs_snapshot:
                    self._schedule_flush(0.0)
                if now - peer.last_sent >= self.heartbeat * 0.9:
                    self._send(peer, HB, self._heartbeat_value(peer))


async def serve_zmq(address: RigAddress, service: Any, options: dict[str, Any] | None = None) -> ZmqServer:
    """Host ``service`` on ``zmq://host:port`` (port 0 picks a free port; see ``handle.port``).

    Options: ``keys`` (keys folder: CURVE on, rig keypair ``<keys>/<key>.key_secret`` with ``key``
    default ``rig``, allow-list ``<keys>/allowed``), ``key_file`` (explicit secret-key file),
    ``data_dir`` (files served after EXPEND;
    default the service's ``data_dir``), ``files_only`` (a file endpoint: commands refused, no state stream),
    ``max_connections`` (TCP connections at once, counted and capped by
    :class:`~transports.zmq.conn_cap.ZmqConnectionCap`), and the tuning knobs of :data:`DEFAULTS`.
    """
    server = ZmqServer(service, options)
    await server.start(address.host, address.port)
    return server
