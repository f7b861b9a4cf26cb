"""RigDeck's own version, as rigs and journals record it (one answer for the console and the rig side)."""

from __future__ import annotations

import functools
from importlib import metadata

#: what a source checkout that was never installed reports: still a version string a parser accepts
UNINSTALLED = "0.0.0"


@functools.cache
def version() -> str:
    """The installed ``rigdeck`` distribution's version, else :data:`UNINSTALLED`."""
    try:
        return metadata.version("rigdeck")
    except metadata.PackageNotFoundError:
        return UNINSTALLED
