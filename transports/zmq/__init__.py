"""RigDeck's native ZeroMQ transport, scheme ``zmq://host:port`` (default port 11002).

The console holds one DEALER per rig (:class:`ZmqLink`); the rig service sits behind one ROUTER
(:func:`serve_zmq`). What it adds over iblutil UDP and Autopilot's messaging:

- exactly-once commands: ids, acknowledgements, resends with backoff until the deadline, and
  deduplication by (sender, id) with cached replies on the rig (``transports.zmq.server``);
- heartbeats both ways: a dead rig is UNREACHABLE within ``heartbeat * liveness`` (1.5 s), a dead console
  is logged by the rig, which keeps running; libzmq reconnects, and the console resynchronises;
- the rig's live state as a snapshot plus sequenced, batched changes, with gap detection and counted,
  reported drops (``ZmqLink.published`` and ``on_update``);
- CURVE encryption and an allow-list of console keys (``transports.zmq.keys``, ``rigdeck keys``);
- chunked, checksummed, resumable transfer of session files (``ZmqLink.list_files/fetch_files``).

Wire format: ``transports.zmq.wire`` (JSON, never pickle). Modules: ``link`` (console side),
``server`` (rig side), ``sockets`` (socket options, heartbeat defaults shared by both ends), ``keys``
(CURVE), ``files`` (session-file transfer).

The registry lists :data:`transports.zmq.descriptor.ZMQ` (scheme, options, these two roles); importing this
package has no side effects.
"""

from __future__ import annotations

from transports.zmq.files import FileAccessError, RemoteFile, TransferError
from transports.zmq.keys import AllowList, KeyFileError, allow_key, default_keys_dir, new_keypair
from transports.zmq.link import ZmqLink
from transports.zmq.server import ZmqServer, serve_zmq

__all__ = [
    "AllowList", "FileAccessError", "KeyFileError", "RemoteFile", "TransferError", "ZmqLink", "ZmqServer",
    "allow_key", "default_keys_dir", "new_keypair", "serve_zmq",
]
