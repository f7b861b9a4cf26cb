"""sync_struct, wire-compatible with sipyco: one process publishes a structure, subscribers keep copies.

Wire: the subscriber sends ``ARTIQ sync_struct\\n<notifier name>\\n``; the publisher answers one PYON
line ``{"action": "init", "struct": <full copy>}`` and then one line per mod (``setitem``, ``delitem``,
``append``, ``insert``, ``pop``; each with the ``path`` of the container it changes). There are no
sequence numbers: TCP keeps the order and every (re)connection starts from a fresh ``init``.

What we do differently from sipyco, on purpose:

- each subscriber's queue is *bounded* (``queue_limit`` mods): a subscriber that cannot keep up is
  disconnected with a warning instead of growing the publisher's memory; it re-inits when it returns;
- :class:`Subscriber` reconnects with backoff and re-inits (sipyco's does not), and a callback that
  raises is logged instead of ending the receive loop;
- anything with ``snapshot()`` and ``subscribe(listener) -> unsubscribe`` can be published, so RigDeck's
  :class:`core.state.LiveState` is published as it is (init = snapshot, then its mods).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from core.listeners import Listeners, Unsubscribe
from core.state import LiveState, Mod, process_mod
from transports.conn_limits import established
from transports.rate_log import RateLimitedLog
from transports.read_size import read_at_most
from transports.rpc import pyon
from transports.rpc.wire import (
    CLIENT_LINE_LIMIT,
    SYNC_BANNER,
    LineServer,
    ProtocolError,
    decode_line,
    encode_line,
    peer_host,
    peer_name,
    read_line,
)

log = logging.getLogger(__name__)

DEFAULT_QUEUE_LIMIT = 1000


class Publishable(Protocol):
    """What a Publisher needs from a structure: a copy now, and every mod after it."""

    def snapshot(self) -> Any: ...

    def subscribe(self, listener: Callable[[Mod], None]) -> Callable[[], None]: ...


# ------------------------------------------------------------------------------------------ notifier

class Notifier:
    """Wraps a plain structure so that every write becomes a mod (sipyco's Notifier, same mods).

    ``n["a"]["b"] = 1`` works through child notifiers; read through :attr:`raw_view` (alias ``read``)
    and never write to it directly, or subscribers silently diverge.
    """

    def __init__(self, backing: Any, _root: Notifier | None = None, _path: Iterable[Any] = ()) -> None:
        self.raw_view = backing
        self._root = _root if _root is not None else self
        self._path = list(_path)
        self._listeners: Listeners[[Mod]] = Listeners("sync_struct notifier listener")

    @property
    def read(self) -> Any:
        return self.raw_view

    def snapshot(self) -> Any:
        return copy.deepcopy(self._root.raw_view)

    def subscribe(self, listener: Callable[[Mod], None]) -> Unsubscribe:
        return self._root._listeners.add(listener)

    def _emit(self, mod: Mod) -> None:
        self._root._listeners.notify(mod)

    def append(self, x: Any) -> None:
        self.raw_view.append(x)
        self._emit({"action": "append", "path": self._path, "x": x})

    def insert(self, i: int, x: Any) -> None:
        self.raw_view.insert(i, x)
        self._emit({"action": "insert", "path": self._path, "i": i, "x": x})

    def pop(self, i: int = -1) -> Any:
        value = self.raw_view.pop(i)
        self._emit({"action": "pop", "path": self._path, "i": i})
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.raw_view[key] = value
        self._emit({"action": "setitem", "path": self._path, "key": key, "value": value})

    def __delitem__(self, key: Any) -> None:
        del self.raw_view[key]
        self._emit({"action": "delitem", "path": self._path, "key": key})

    def __getitem__(self, key: Any) -> Notifier:
        return Notifier(self.raw_view[key], self._root, [*self._path, key])


# ----------------------------------------------------------------------------------------- publisher

class _Subscription:
    """One connected subscriber: a bounded queue of encoded lines, drained by one sender task."""

    def __init__(self, peer: str, writer: asyncio.StreamWriter, limit: int) -> None:
        self.peer = peer
        self.writer = writer
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=limit)
        self.kicked: str | None = None

    def offer(self, line: bytes) -> None:
        if self.kicked:
            return
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.kick(f"too slow: {self.queue.maxsize} mods queued")

    def kick(self, why: str) -> None:
        if self.kicked:
            return
        self.kicked = why
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
        self.writer.transport.abort()  # unblocks a sender stuck in drain()


class Publisher(LineServer):
    """Serve named structures (Notifier, LiveState, anything :class:`Publishable`) to subscribers."""

    def __init__(self, notifiers: Mapping[str, Publishable], queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        self.notifiers = dict(notifiers)
        self.queue_limit = queue_limit
        self._subs: dict[str, set[_Subscription]] = {name: set() for name in self.notifiers}
        self._unsubscribe = [
            source.subscribe(self._listener(name)) for name, source in self.notifiers.items()
        ]
        self.kicked = 0  # subscribers disconnected for being slow (diagnostics, tests)
        self._rlog = RateLimitedLog(log)

    def _listener(self, name: str) -> Callable[[Mod], None]:
        def on_mod(mod: Mod) -> None:
            subs = self._subs.get(name)
            if not subs:
                return  # nobody listening: don't even encode
            try:
                line = encode_line(mod)  # now: the mod may hold live references that change later
            except pyon.PyonError as ex:
                log.error("sync_struct %s: mod %s cannot be encoded (%s); subscribers will re-init", name,
                          mod.get("action"), ex)
                for sub in list(subs):
                    sub.kick("unencodable mod")
                return
            for sub in list(subs):
                was = sub.kicked
                sub.offer(line)
                if sub.kicked and not was:
                    self.kicked += 1
                    log.warning("sync_struct %s: subscriber %s %s; disconnecting it (it re-inits on reconnect)",
                                name, sub.peer, sub.kicked)

        return on_mod

    def subscriber_count(self, name: str | None = None) -> int:
        if name is not None:
            return len(self._subs.get(name, ()))
        return sum(len(s) for s in self._subs.values())

    def _hang_up_all(self) -> None:
        for subs in self._subs.values():
            for sub in list(subs):
                sub.kick("publisher closing")

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        await super().close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_name(writer)
        sub: _Subscription | None = None
        name = ""
        eof_watch: asyncio.Task[Any] | None = None
        try:
            banner = await read_line(reader, "the banner")
            if banner + b"\n" != SYNC_BANNER:
                raise ProtocolError(f"bad banner {banner[:40]!r} (expected {SYNC_BANNER!r})")
            name = (await read_line(reader, "the notifier name")).decode("utf-8", "replace")
            if name not in self.notifiers:
                raise ProtocolError(f"unknown notifier {name[:60]!r} (publishing {sorted(self.notifiers)})")
            sub = _Subscription(peer, writer, self.queue_limit)
            # snapshot and registration with no await between: no mod is lost or sent twice
            init = encode_line({"action": "init", "struct": self.notifiers[name].snapshot()})
            self._subs[name].add(sub)
            writer.write(init)
            established(writer.transport)
            eof_watch = asyncio.get_running_loop().create_task(self._watch_eof(reader, sub))
            log.debug("sync_struct: %s subscribed to %s", peer, name)
            while True:
                line = await sub.queue.get()
                if line is None:
                    break
                writer.write(line)
                await writer.drain()
        except ProtocolError as ex:
            self._rlog.warning(peer_host(peer), "sync_struct: %s: %s; closing that connection", peer, ex)
        except pyon.PyonError as ex:
            log.error("sync_struct %s: snapshot cannot be encoded: %s", name, ex)
        except (ConnectionError, OSError) as ex:
            log.debug("sync_struct: %s gone: %s", peer, ex)
        except Exception:  # a bug of ours must cost one subscriber, never the publisher
            log.exception("sync_struct: %s: unexpected error; closing that connection", peer)
        finally:
            if sub is not None:
                self._subs[name].discard(sub)
            if eof_watch is not None:
                eof_watch.cancel()
            writer.close()

    @staticmethod
    async def _watch_eof(reader: asyncio.StreamReader, sub: _Subscription) -> None:
        """Subscribers send nothing after the handshake: EOF (or anything) means it is gone."""
        with contextlib.suppress(Exception):
            await reader.read(1)
        sub.kick("closed by subscriber")


# ---------------------------------------------------------------------------------------- subscriber

ModCallback = Callable[[Mod], None]


class Subscriber:
    """Keep a local copy of a remote notifier; call ``notify_cb(mod)`` after each mod (init included).

    ``target_builder(struct)`` turns the init struct into the local target (identity by default); mods
    are applied with :func:`core.state.process_mod`, so the target can be any dict/list-like object.
    """

    def __init__(
        self,
        notifier_name: str,
        target_builder: Callable[[Any], Any] | None = None,
        notify_cb: ModCallback | Iterable[ModCallback] | None = None,
        disconnect_cb: Callable[[str], None] | None = None,
        retry_max: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not notifier_name or "\n" in notifier_name:
            raise ValueError("a notifier name is one non-empty line")
        self.name = notifier_name
        self.target_builder = target_builder
        if notify_cb is None:
            self.notify_cbs: list[ModCallback] = []
        elif callable(notify_cb):
            self.notify_cbs = [notify_cb]
        else:
            self.notify_cbs = list(notify_cb)
        self.disconnect_cb = disconnect_cb
        self.retry_max = retry_max
        self.connect_timeout = connect_timeout
        self.struct: Any = None
        self.inits = 0
        self.connected = False
        self.last_error: str | None = None
        self._inited = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closing = False

    async def connect(self, host: str, port: int, reconnect: bool = False) -> None:
        """Connect and receive the init now (raises if that fails); then keep receiving in the
        background, reconnecting after a loss when ``reconnect``."""
        self._closing = False
        await self._open(host, port)
        self._task = asyncio.get_running_loop().create_task(self._run(host, port, reconnect, connected=True))

    def start(self, host: str, port: int) -> None:
        """Connect in the background and keep reconnecting; never raises for an absent publisher."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(host, port, True, connected=False))

    async def wait_init(self, timeout: float | None = None) -> Any:
        """Wait for the next init (the first one if none came yet) and return the struct."""
        await asyncio.wait_for(self._inited.wait(), timeout)
        return self.struct

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._hang_up()

    def _hang_up(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self.connected = False
        if writer is not None:
            writer.close()

    async def _open(self, host: str, port: int) -> None:
        try:
            await asyncio.wait_for(self._handshake(host, port), self.connect_timeout)
        except BaseException:
            self._hang_up()
            raise

    async def _handshake(self, host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port, limit=CLIENT_LINE_LIMIT)
        read_at_most(writer.transport)
        self._reader, self._writer = reader, writer
        writer.write(SYNC_BANNER + self.name.encode("utf-8") + b"\n")
        try:
            line = await read_line(reader, "the init message")
        except ConnectionResetError:
            raise ProtocolError(f"publisher closed the connection before init (no notifier {self.name!r}?)") from None
        mod = decode_line(line, "init message")
        if not isinstance(mod, dict) or mod.get("action") != "init" or "struct" not in mod:
            raise ProtocolError(f"expected an init message, got {line[:80]!r}")
        self.connected = True
        self.last_error = None
        self._apply(mod)

    def _apply(self, mod: Mod) -> None:
        if mod["action"] == "init":
            struct = mod["struct"]
            self.struct = self.target_builder(struct) if self.target_builder else struct
            self.inits += 1
            self._inited.set()
        else:
            self.struct = process_mod(self.struct, mod)
        for cb in list(self.notify_cbs):
            try:
                cb(mod)
            except Exception:
                log.exception("sync_struct %s: notify callback failed on %s", self.name, mod.get("action"))

    async def _receive(self) -> None:
        reader = self._reader
        assert reader is not None
        while True:
            mod = decode_line(await read_line(reader, "a mod"), "mod")
            if not isinstance(mod, dict) or "action" not in mod:
                raise ProtocolError(f"not a mod: {pyon.brief(mod)}")
            try:
                self._apply(mod)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as ex:
                # our copy diverged (or the mod is bad): start again from a fresh init
                action = str(mod.get("action"))[:20]
                where = pyon.brief(mod.get("path"))
                raise ProtocolError(f"cannot apply {action} at {where}: {pyon.brief(ex)}") from None

    async def _run(self, host: str, port: int, reconnect: bool, connected: bool) -> None:
        delay = 0.1
        while not self._closing:
            if not connected:
                try:
                    await self._open(host, port)
                    delay = 0.1
                except (TimeoutError, OSError, ProtocolError) as ex:
                    self.last_error = str(ex) or type(ex).__name__
                    log.debug("sync_struct %s at %s:%s: %s; retry in %.1f s", self.name, host, port, ex, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max)
                    continue
            try:
                await self._receive()
            except (OSError, ProtocolError) as ex:
                self.last_error = str(ex) or type(ex).__name__
            self._hang_up()
            connected = False
            self._inited.clear()
            if self._closing:
                break
            log.info("sync_struct %s at %s:%s lost: %s", self.name, host, port, self.last_error)
            if self.disconnect_cb is not None:
                try:
                    self.disconnect_cb(self.last_error or "disconnected")
                except Exception:
                    log.exception("sync_struct %s: disconnect callback failed", self.name)
            if not reconnect:
                break
            await asyncio.sleep(delay)


# --------------------------------------------------------------------------------- live-state glue

def prefix_mod(mod: Mod, path: Iterable[Any]) -> Mod:
    """The same mod, applied below ``path`` (an init becomes a setitem of the whole struct)."""
    path = list(path)
    if not path:
        return mod
    if mod.get("action") == "init":
        return {"action": "setitem", "path": path[:-1], "key": path[-1], "value": mod["struct"]}
    return {**mod, "path": [*path, *mod.get("path", [])]}


def feed_live_state(state: LiveState, path: Iterable[Any]) -> ModCallback:
    """A notify callback that mirrors a remote notifier into ``state`` at ``path`` (non-empty)."""
    path = list(path)
    if not path:
        raise ValueError("mirror a remote structure into a subtree, not the root")

    def on_mod(mod: Mod) -> None:
        if mod.get("action") == "init":
            state.set(path, copy.deepcopy(mod["struct"]))
        else:
            state.apply(prefix_mod(mod, path))

    return on_mod
