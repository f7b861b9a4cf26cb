"""Socket set-up shared by both ends of ``zmq://``: bounded queues, no lingering, never a blocking send.

Why each option:

- ``SNDHWM``/``RCVHWM``: a dead or slow peer can hold at most this many messages per pipe; beyond it a
  ROUTER drops and a DEALER refuses (``EAGAIN``), so memory stays bounded;
- ``LINGER 0``: closing never waits for a peer that is gone;
- ``IMMEDIATE`` (DEALER): nothing is queued for a connection that is not up, so a command never sits
  in a buffer while the rig is down and then runs minutes later; the sender's resend timer owns retries;
- ZMTP heartbeats: libzmq tears down a TCP connection whose peer host vanished (no FIN), so the pipe
  and its queue go away; our JSON heartbeats (see ``zmq_client``) still detect a hung *application*;
- ``MAXMSGSIZE``: a peer cannot make us allocate an arbitrarily large message;
- ``RECONNECT_IVL``/``_MAX``: libzmq's automatic reconnect, with exponential backoff from 100 ms to 2 s.

Every send is ``DONTWAIT``: :func:`send_now` returns False instead of blocking or raising.
"""

from __future__ import annotations

import ipaddress
import logging

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

DEFAULT_HWM = 1000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def tune(sock: zmq.Socket, hwm: int = DEFAULT_HWM, heartbeat_ms: int = 500, dealer: bool = False) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_ms * 3)
    sock.setsockopt(zmq.HEARTBEAT_TTL, heartbeat_ms * 3)
    if dealer:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)


def send_now(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Send without ever waiting: True if libzmq took the message, False if it was refused (HWM, no peer)."""
    try:
        future = sock.send_multipart(frames, flags=zmq.DONTWAIT)
    except zmq.ZMQError as ex:  # closed socket, bad state
        log.debug("send refused: %s", ex)
        return False
    if not future.done():  # cannot happen with DONTWAIT and no queued sends; never leave it unobserved
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return True
    if future.cancelled():
        return False
    exc = future.exception()
    if exc is None:
        return True
    if isinstance(exc, zmq.ZMQError):  # Again (HWM / no connected peer), EHOSTUNREACH, ETERM...
        return False
    raise exc


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tcp_endpoint(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "*"):  # noqa: S104 - explicit "listen on all interfaces" spelled by the user
        return f"tcp://*:{port}"
    if ":" in host and not host.startswith("["):
        return f"tcp://[{host}]:{port}"
    return f"tcp://{host}:{port}"
