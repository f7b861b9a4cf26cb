"""sipyco pc_rpc + sync_struct (scheme ``rpc://host:port/target``), wire-compatible with ARTIQ/sipyco.

- ``pyon``: the value format (JSON + ``__jsonclass__`` markers), bounded, no eval;
- ``wire``: banners, line framing and packed exceptions shared by pc_rpc and sync_struct;
- ``client`` / ``server``: generic pc_rpc client and server;
- ``sync_struct``: publisher/subscriber of a structure (mods);
- ``link``: a controller as a console :class:`~core.link.RigLink`;
- ``targets`` + ``rig_server``: a RigDeck rig service exposed to sipyco tools.
"""

from transports.rpc.link import RpcLink
from transports.rpc.rig_server import serve_rpc

__all__ = ["RpcLink", "serve_rpc"]
