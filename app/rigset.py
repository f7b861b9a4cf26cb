"""The console's rigs: RigSpecs from a rigs file (or a journal) turned into connected RigLinks and their monitor.

App-level glue between :mod:`core.config`, :mod:`transports.registry` and :class:`core.session.Session`:
the engine takes ready links and stays socket-free; this object owns the links (builds them from the
scheme registry, connects them all at once, closes them) and the :class:`~core.monitor.RigMonitor` that
watches them for exactly as long as they live, so every session run over them reads one picture of the
rigs. The CLI and the GUI both use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from core.config import ConfigError, RigSpec, load_rigs, parse_rig
from core.journal import REDACTED, SessionSummary
from core.link import RigLink
from core.monitor import DEFAULT_TIMEOUT, RigMonitor
from core.state import LiveState
from transports import registry

log = logging.getLogger(__name__)

LinkFactory = Callable[[RigSpec], RigLink]


class RigSet:
    """Specs in, links out. ``async with RigSet(specs) as links:`` connects and closes them.

    ``poll_interval``: how often :attr:`monitor` asks rigs that don't push for their EXPSTATUS (None: never,
    for a one-shot probe); ``timeout`` its default per-request timeout; ``state`` the live state it writes
    ``rigs/<name>`` into.
    """

    def __init__(self, specs: Mapping[str, RigSpec], link_factory: LinkFactory | None = None,
                 sessions_only: bool = True, *, poll_interval: float | None = None,
                 timeout: float = DEFAULT_TIMEOUT, state: LiveState | None = None) -> None:
        self.all_specs = dict(specs)
        #: the rigs that take part: enabled ones, and (for sessions) not manipulator-only rigs
        self.specs = {n: s for n, s in specs.items() if (s.in_sessions if sessions_only else s.enabled)}
        self._factory = link_factory or registry.make_link
        self.links: dict[str, RigLink] = {}
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.state = state if state is not None else LiveState()
        #: made by :meth:`open` (it must see the links from their first state change), closed by :meth:`close`
        self.monitor: RigMonitor | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> RigSet:
        return cls(load_rigs(path, registry.TRANSPORTS), **kwargs)

    @classmethod
    def from_journal(cls, summary: SessionSummary, override: Mapping[str, RigSpec] | None = None,
                     **kwargs: Any) -> RigSet:
        """The rigs a journal recorded (its participants), with addresses from ``override`` where given.

        Secret options were redacted in the journal; a rigs file passed as ``override`` supplies them.
        """
        specs: dict[str, RigSpec] = {}
        names = summary.participants or list(summary.rigs)
        for name in names:
            if override and name in override:
                specs[name] = override[name]
                continue
            rec = summary.rigs.get(name)
            if not isinstance(rec, dict) or "uri" not in rec:
                raise ConfigError(f"{summary.path}: rig {name!r} has no recorded URI; pass --rigs FILE")
            options = {k: v for k, v in (rec.get("options") or {}).items() if v != REDACTED}
            specs[name] = parse_rig(name, {"uri": rec["uri"], "role": rec.get("role", "aux"), **options},
                                    registry.TRANSPORTS, str(summary.path))
        return cls(specs, **kwargs)

    def prepare(self) -> RigMonitor:
        """Build the links and their monitor without any I/O, so a caller can subscribe to the monitor before
        :meth:`open` connects (and so see every change from the first one)."""
        for name, spec in self.specs.items():
            if name not in self.links:
                self.links[name] = self._factory(spec)
        if self.monitor is None:
            self.monitor = RigMonitor(self.links, self.specs, state=self.state, poll_interval=self.poll_interval,
                                      timeout=self.timeout)
        return self.monitor

    async def open(self) -> dict[str, RigLink]:
        """Build and connect every link at once. A rig that is down gives an UNREACHABLE link, not an error."""
        monitor = self.prepare()
        results = await asyncio.gather(*(link.connect() for link in self.links.values()), return_exceptions=True)
        for (name, _), result in zip(self.links.items(), results, strict=True):
            if isinstance(result, BaseException):
                log.warning("rig %s: connect failed: %s", name, result)
        await monitor.start()
        return dict(self.links)

    async def close(self) -> None:
        """Stop the monitor (its last picture stays in the live state), then close every link."""
        if self.monitor is not None:
            await self.monitor.close()
        links, self.links = list(self.links.values()), {}
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)

    async def __aenter__(self) -> dict[str, RigLink]:
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
