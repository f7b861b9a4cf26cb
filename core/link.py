"""The two interfaces every transport implements: RigLink (console side) and MessageHandler (rig side).

The session engine only ever sees :class:`RigLink` objects; a transport's server only adapts its wire
format to a :class:`MessageHandler`. Keeping both here, in ``core``, is what lets one engine drive
iblutil UDP rigs, ZeroMQ rigs and pc_rpc controllers side by side.
"""

from __future__ import annotations

import abc
import enum
import time
from collections.abc import Callable
from typing import Any, Protocol

from core.listeners import Listeners, Unsubscribe
from core.protocol import ExpMessage


class LinkState(enum.StrEnum):
    """What the console knows about reaching a rig."""

    CONNECTING = "connecting"
    ONLINE = "online"
    UNREACHABLE = "unreachable"
    CLOSED = "closed"


class RigError(Exception):
    """Base of every failure a link reports for one request (never closes the link)."""


class RequestTimeout(RigError, TimeoutError):
    """No reply within the request's timeout (after any retries the transport makes)."""


class RemoteError(RigError):
    """The rig answered with an error report (iblutil ``[0, "Type: message", event]``)."""

    def __init__(self, text: str, event: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.event = event


class LinkClosed(RigError):
    """The link was closed (by us) or cannot be used any more."""


StateListener = Callable[[LinkState, str | None], None]
UpdateListener = Callable[[dict[str, Any]], None]
HeardListener = Callable[[float | None], None]


class RigLink(abc.ABC):
    """One console-side connection to one rig.

    ``request`` returns the reply's data (the message without its event code, as iblutil's Services
    do), raises :class:`RemoteError` for an error report and :class:`RequestTimeout` when the rig does
    not answer; neither closes the link. Links that receive unsolicited state (ZeroMQ state streams,
    sync_struct) set ``pushes_status`` and deliver sync_struct-style mods, relative to the rig's own
    published tree, to ``on_update`` listeners.
    """

    pushes_status: bool = False
    #: transports that can tell a retry from a new command set this; the engine may then retry anything
    exactly_once: bool = False

    def __init__(self, name: str, uri: str) -> None:
        self.name = name
        self.uri = uri
        self.state = LinkState.CONNECTING
        self.last_error: str | None = None
        self.last_reply: float | None = None
        self.last_rtt: float | None = None
        self._state_listeners: Listeners[[LinkState, str | None]] = Listeners(f"link state listener of {name}")
        self._update_listeners: Listeners[[dict[str, Any]]] = Listeners(f"link update listener of {name}")
        self._heard_listeners: Listeners[[float | None]] = Listeners(f"link heard listener of {name}")

    # -------------------------------------------------------------- the interface
    @abc.abstractmethod
    async def connect(self) -> None:
        """Open sockets. Must not fail because the rig is down: the link then reports UNREACHABLE."""

    @abc.abstractmethod
    async def request(self, event: ExpMessage, *data: Any, timeout: float | None = None) -> list[Any]:
        """Send ``[event, *data]`` and return the reply's data."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release sockets; pending requests fail with :class:`LinkClosed`."""

    # -------------------------------------------------------------- listeners
    def on_state(self, listener: StateListener) -> Unsubscribe:
        """``listener(state, error)`` on every change of :attr:`state`; returns its unsubscribe."""
        return self._state_listeners.add(listener)

    def on_update(self, listener: UpdateListener) -> Unsubscribe:
        """``listener(mod)`` for every pushed change of the rig's published tree; returns its unsubscribe."""
        return self._update_listeners.add(listener)

    def on_heard(self, listener: HeardListener) -> Unsubscribe:
        """``listener(rtt)`` for every message the rig sends: a reply (its round trip in s) or a pushed update
        (None). What a rig monitor counts "last heard" from, whoever made the request."""
        return self._heard_listeners.add(listener)

    def listener_count(self) -> int:
        """How many listeners this link holds (a leak check: observers must unsubscribe when done)."""
        return len(self._state_listeners) + len(self._update_listeners) + len(self._heard_listeners)

    def set_state(self, state: LinkState, error: str | None = None) -> None:
        """Transports call this; listeners are told only on a real change (or a new error text)."""
        if state is self.state and (error is None or error == self.last_error):
            return
        self.state = state
        if error is not None:
            self.last_error = error
        self._state_listeners.notify(state, error)

    def note_reply(self, rtt: float) -> None:
        """Transports call this on every reply: the rig is online, and how fast it answered."""
        self.last_reply = time.time()
        self.last_rtt = rtt
        self.set_state(LinkState.ONLINE)
        self._heard_listeners.notify(rtt)

    def note_heard(self) -> None:
        """Transports call this for a message that is neither a reply nor a pushed mod (a heartbeat): the
        rig is alive, and "last heard" must say so."""
        self._heard_listeners.notify(None)

    def emit_update(self, mod: dict[str, Any]) -> None:
        """Transports call this for every pushed mod of the rig's published tree."""
        self._update_listeners.notify(mod)
        self._heard_listeners.notify(None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.uri} {self.state.value}>"


class MessageHandler(Protocol):
    """The rig side: a transport-agnostic object that answers one decoded message.

    ``data`` is the message without its event code; the return value is the reply's data (the transport
    puts the same event code in front). Raising any exception makes the transport answer an error report
    ``[0, "ExcType: message", event]``.
    """

    async def handle(self, event: ExpMessage, data: list[Any], peer: str) -> list[Any]: ...


def error_text(exc: BaseException) -> str:
    """``"ExcType: message"``, the error-report text iblutil peers expect."""
    return f"{type(exc).__name__}: {exc}"
