"""A logger front that writes at most one line per key per interval: a flood of bad input from a broken or
hostile peer cannot flood the log, and the line says how many similar ones it stood for."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """Logs at most one line per ``interval`` seconds per key, counting what it skipped."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        if len(self._last) > 1024:  # keys naming peers: forget old ones rather than grow without end
            self._last.clear()
            self._skipped.clear()
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        self.logger.log(level, msg + (f" ({skipped} similar suppressed)" if skipped else ""), *args)

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.INFO, key, msg, *args)
