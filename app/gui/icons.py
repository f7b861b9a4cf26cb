"""Icons from ``resources/icons`` (SVG, drawn for RigDeck), loaded once."""

from __future__ import annotations

import functools
from pathlib import Path

from PySide6.QtGui import QIcon

ICONS = Path(__file__).resolve().parents[2] / "resources" / "icons"


@functools.cache
def icon(name: str) -> QIcon:
    """``resources/icons/<name>.svg`` (an empty icon if the file is missing: never a crash over a picture)."""
    path = ICONS / f"{name}.svg"
    return QIcon(str(path)) if path.exists() else QIcon()


def link_icon(state: str) -> QIcon:
    return icon(state if state in ("online", "connecting", "unreachable", "closed") else "connecting")
