"""The console's colours, chosen to be read: text at least 4.5:1 on its background (WCAG AA), plots in the
Okabe-Ito palette (told apart with the common colour-vision deficiencies). Qt-free, so a test checks the
contrast of every colour the window uses for text.
"""

from __future__ import annotations

#: Okabe & Ito (2008), "Color Universal Design": eight colours distinguishable by most colour-blind viewers
OKABE_ITO: list[str] = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]

#: the background the tables are drawn on (light theme) and their alternating rows
TABLE_BACKGROUNDS = ("#ffffff", "#f5f5f5")

#: log levels as text colours on the table background
LEVEL_COLOURS: dict[str, str] = {"error": "#b3261e", "warning": "#8a5300", "debug": "#5f6368"}

#: old news in a table (a value not confirmed recently): grey, yet 4.5:1 on both row backgrounds
STALE = "#5f6368"

#: (background, text) of an alarm whose rig is still away (the banner line, the session label, the status bar)
#: and of one whose rig is back (the banner line until acknowledged)
ALARM_OPEN = ("#c62828", "#ffffff")
ALARM_CLOSED = ("#f0a30a", "#1a1a1a")

#: link states as text colours
LINK_COLOURS: dict[str, str] = {"online": "#1b7a35", "connecting": "#8a5300", "unreachable": "#b3261e",
                                "closed": "#5f6368"}

#: plot background (pyqtgraph's dark one: every Okabe-Ito colour but black is >= 3:1 on it, the contrast a
#: line or a dot needs) and the ink of labels drawn in the plot
PLOT_BACKGROUND = "#000000"
PLOT_INK = "#f0f0f0"


def _channel(c: float) -> float:
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def luminance(colour: str) -> float:
    """WCAG relative luminance of ``#rrggbb``."""
    value = colour.lstrip("#")
    r, g, b = (int(value[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio (1 to 21)."""
    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


#: plot series colours in the order they are handed out (black left out: it is the background)
SERIES: list[str] = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#D55E00", "#0072B2"]


def series_colour(i: int) -> str:
    return SERIES[i % len(SERIES)]

#: the session timeline's spans (window and report page alike): rig statuses, step outcomes, incidents, transfer
TIMELINE_STATUS: dict[str, str] = {"CONNECTED": "#9e9e9e", "INITIALIZED": "#56b4e9", "RUNNING": "#009e73",
                                   "STOPPED": "#0072b2"}
TIMELINE_STEP: dict[str, str] = {"ok": "#4d4d4d", "error": "#d55e00", "timeout": "#e69f00", "skipped": "#cc79a7"}
TIMELINE_INCIDENT = "#d55e00"
TIMELINE_TRANSFER = "#7b3294"
TIMELINE_UNKNOWN = "#bdbdbd"
