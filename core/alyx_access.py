"""Who may read a rig's Alyx token: the ``alyx.allow`` list of its rig file.

The token logs into the lab database as its user, so a rig must not hand it to whichever host asks
(``[128, null, {}]`` is one datagram). Entries are the words ``loopback`` (this machine) and ``session``
(the host of the console running this rig's session: the one that sent its EXPINIT or EXPSTART), and
addresses, networks or hostnames as in a listener's ``allow`` (names are resolved once, at load).
Without the key the list is ``[loopback, session]``; an empty list hands the token to nobody.

Only *reading* the token is guarded: a console relaying a token to this rig gives, it takes nothing.
Peers are the texts every transport passes the handler (:mod:`core.peers`); a peer whose address the
transport cannot tell is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.peers import Address, address, in_networks, is_loopback, networks, peer_host

#: what ``alyx.allow`` means when the rig file leaves it out
DEFAULT_ALLOW = ("loopback", "session")
#: the entries that are not addresses
WORDS = frozenset({"loopback", "session"})


class AlyxRefused(PermissionError):
    """A peer asked for the rig's Alyx token and is not allowed to have it (the error reply says why)."""


def check_allow(value: object) -> list[str]:
    """``alyx.allow`` as read from a rig file: a list of strings, each a word, address, network or name
    that resolves (ValueError saying which entry is wrong otherwise)."""
    if not isinstance(value, list | tuple) or not all(isinstance(e, str) and e.strip() for e in value):
        raise ValueError("alyx.allow must be a list of addresses, networks, hostnames, 'loopback' or 'session'")
    entries = [e.strip() for e in value]
    for entry in entries:
        if entry not in WORDS:
            networks(entry)
    return entries


class AlyxAccess:
    """The ``alyx.allow`` rule of one rig; :meth:`refusal` says why a peer may not have the token."""

    def __init__(self, entries: Iterable[str] | None = None) -> None:
        self.entries = list(DEFAULT_ALLOW if entries is None else entries)
        self.loopback = "loopback" in self.entries
        self.session = "session" in self.entries
        self.networks = [net for entry in self.entries if entry not in WORDS for net in networks(entry)]

    def refusal(self, peer: str, session_hosts: Iterable[Address] = ()) -> str | None:
        """None when ``peer`` may have the token; else the reason, for the error reply."""
        host = peer_host(peer)
        if host is None:
            return f"the address of {peer} is unknown"
        if self.loopback and is_loopback(host):
            return None
        if self.session and address(host) in set(session_hosts):
            return None
        if in_networks(host, self.networks):
            return None
        allowed = ", ".join(self.entries) or "nobody"
        return f"{host} is not allowed to have it (alyx.allow in the rig file: {allowed})"
