"""Socket.IO packets that cannot hurt the server: what python-socketio's own decoding lets through.

python-socketio parses every packet's JSON before any handler of ours runs. Nesting thousands deep raises
RecursionError there, an integer of more than 100 digits ValueError (engine.io's guard), an event that is
not a list starting with a string name a KeyError or TypeError further on; each ends as a traceback in the
log and no answer to the client. :class:`GuardedPacket` decodes the same packets but turns each of those
into an event named :data:`BAD_PACKET` carrying the reason, which the server and the relay answer
``Malformed request.`` and log as one rate-limited line.
"""

from __future__ import annotations

from typing import Any

from socketio import packet

#: the event name a bad packet becomes (a NUL first: no client can mean it)
BAD_PACKET = "\x00bad packet"


class GuardedPacket(packet.Packet):
    """python-socketio's packet, decoding hostile input to a :data:`BAD_PACKET` event instead of raising."""

    def decode(self, encoded_packet: Any) -> int:
        try:
            count = super().decode(encoded_packet)
        except (ValueError, RecursionError) as ex:  # too deep, an integer too long, a bad id or type
            self.packet_type = packet.EVENT
            self.data = [BAD_PACKET, f"{type(ex).__name__}: {str(ex)[:100]}"]
            return 0
        if self.packet_type in (packet.EVENT, packet.BINARY_EVENT) and not (
                isinstance(self.data, list) and self.data and isinstance(self.data[0], str)):
            self.data = [BAD_PACKET, "an event must be a list that starts with the event's name"]
        return count
