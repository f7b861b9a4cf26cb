"""A session's files: its folder (claimed for an exp_ref), its journal from the first record on, its description.

Kept apart from the engine (:mod:`core.session`) because none of it is about talking to rigs: which folder
an exp_ref gets, how records made before that folder exists are kept, and that a failing disk is logged
rather than raised (a full disk must not hide the rigs' state from the experimenter).
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Any

from core.journal import JOURNAL_NAME, Journal, write_yaml_atomic
from core.paths import next_exp_ref, reserve_session, session_folder
from core.protocol import format_exp_ref, parse_exp_ref

log = logging.getLogger(__name__)


def claim_folder(data_dir: Path, subject: str, offered: Any, today: _dt.date) -> tuple[str, Path]:
    """(exp_ref, folder) for a new session: the main-sync rig's offer if it is free and for this subject, else
    the next free number of ``today``. Raises ValueError saying what is wrong with an offer."""
    if offered:
        ref = parse_exp_ref(offered)
        if ref.subject != subject:
            raise ValueError(f"the main-sync rig's exp_ref {format_exp_ref(ref)!r} is for subject "
                             f"{ref.subject!r}, not {subject!r}")
        folder = session_folder(data_dir, ref)
        if (folder / JOURNAL_NAME).exists():
            raise ValueError(f"exp_ref {format_exp_ref(ref)} already has a session journal in {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        return format_exp_ref(ref), folder
    ref, folder = reserve_session(data_dir, subject, today)
    return format_exp_ref(ref), folder


def free_instead(data_dir: Path, subject: str, offered: Any) -> str | None:
    """The next free exp_ref here when the main-sync rig offered one this console already has a journal for."""
    try:
        ref = parse_exp_ref(offered) if offered else None
    except ValueError:
        return None  # claim_folder says what is wrong with it
    if ref is None or ref.subject != subject:
        return None
    if not (session_folder(data_dir, ref) / JOURNAL_NAME).exists():
        return None
    return format_exp_ref(next_exp_ref(data_dir, subject, ref.date))


class SessionJournal:
    """The session's journal, usable before its file exists: records made before :meth:`open` (the folder
    is known after EXPINFO) wait in memory with their own times and follow the opening record."""

    def __init__(self) -> None:
        self.file: Journal | None = None
        self._pending: list[tuple[str, dict[str, Any], float]] = []

    @property
    def path(self) -> Path | None:
        return self.file.path if self.file is not None else None

    def open(self, path: Path, kind: str, **fields: Any) -> None:
        """Create (or, on a reattach, continue) the file with a ``kind`` record, then the waiting ones."""
        self.file = Journal(path)
        self.write(kind, **fields)
        for pending_kind, pending, at in self._pending:
            self.write(pending_kind, at=round(at, 6), **pending)
        self._pending.clear()

    def write(self, kind: str, **fields: Any) -> None:
        if self.file is None:
            self._pending.append((kind, fields, time.time()))
        elif not self.file.closed:
            try:
                self.file.write(kind, **fields)
            except OSError as ex:
                log.error("cannot write the journal %s: %s", self.file.path, ex)

    def sync(self) -> None:
        if self.file is not None:
            try:
                self.file.sync()
            except OSError as ex:
                log.error("cannot fsync the journal %s: %s", self.file.path, ex)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def write_description(path: Path, description: dict[str, Any]) -> None:
    """Rewrite the experiment description atomically; a failure is logged (the journal has it all anyway)."""
    try:
        write_yaml_atomic(path, description)
    except OSError as ex:
        log.error("cannot write %s: %s", path, ex)
