"""The ``allow`` option of a listen URI, enforced the same way by every server that sees its peers' addresses.

Entries are addresses (``10.0.0.5``, ``::1``), networks (``10.0.0.0/24``) or hostnames; a hostname is
resolved once, when the server starts (a name that does not resolve is an error then, not a silent
hole later). Peers arriving as IPv4-mapped IPv6 (``::ffff:10.0.0.5``, a dual-stack socket) match their
IPv4 entry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from core.peers import Network, in_networks, networks
from transports.rate_log import RateLimitedLog

log = logging.getLogger(__name__)

#: a refused host is logged at most once per this many seconds (a scan must not flood the log)
LOG_EVERY = 10.0


class AllowList:
    """Which peer addresses a server lets in."""

    def __init__(self, entries: str | Iterable[str]) -> None:
        self.entries = [entries] if isinstance(entries, str) else [str(e) for e in entries]
        if not self.entries:
            raise ValueError("allow: an empty list would refuse everyone; leave the option out instead")
        self.networks: list[Network] = [net for entry in self.entries for net in networks(entry)]
        self.refused = 0
        self._rlog = RateLimitedLog(log, LOG_EVERY)

    def permits(self, host: str) -> bool:
        """True when ``host`` (a peer's address as the socket reports it) is in the list."""
        return in_networks(host, self.networks)

    def admits(self, host: str, server: str) -> bool:
        """:meth:`permits`, counting and logging (rate-limited, per host) a refusal by ``server``."""
        if self.permits(host):
            return True
        self.refused += 1
        self._rlog.warning(host, "%s: refused %s (not in the allow list: %s)", server, host, self)
        return False

    def __str__(self) -> str:
        return ", ".join(self.entries)


def allow_list(value: str | Iterable[str] | None) -> AllowList | None:
    """The ``allow`` option as an :class:`AllowList`, or None when the option is absent."""
    return None if value is None else AllowList(value)
