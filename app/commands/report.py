"""``rigdeck report``: what happened in a past session, from its journal.

    rigdeck report 2026-11-22_1_KS001 [--data-dir DIR] [--html FILE] [--json]

The session is found under the data folder the way ``rigdeck run --attach`` finds it
(``<data_dir>/<subject>/<date>/<NNN>/_rigdeck_journal.jsonl``); a session folder or a journal path works
too. The report is rebuilt (so files transferred since show up) and saved beside the journal as
``_rigdeck_report.json`` and ``_rigdeck_report.html`` (``--html FILE``: the page goes there instead).
Prints a summary per rig, or with ``--json`` exactly one JSON object: the report. Exit 0 when the session
completed, 1 otherwise, 2 when there is no such session.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from app.report_html import clock, duration, files_text, save_report
from core.config import ConfigError
from core.journal import JOURNAL_NAME
from core.paths import resolve_data_dir, session_folder
from core.protocol import parse_exp_ref
from core.report import REPORT_HTML, REPORT_JSON


def find_session(ref: str, data_dir: Path) -> Path:
    """The session folder of an exp_ref (or a folder / journal path given as is)."""
    given = Path(ref).expanduser()
    if given.name == JOURNAL_NAME and given.is_file():
        return given.parent
    if (given / JOURNAL_NAME).is_file():
        return given
    try:
        folder = session_folder(data_dir, parse_exp_ref(ref))
    except ValueError as ex:
        raise ConfigError(f"rigdeck report: {ex}") from None
    if not (folder / JOURNAL_NAME).is_file():
        raise ConfigError(f"rigdeck report: no session journal for {ref} in {data_dir}")
    return folder


def print_report(report: dict[str, Any], out: TextIO) -> None:
    """The human summary: the session in one line, then one block per rig."""
    tag = " [degraded]" if report.get("degraded") else ""
    print(f"session {report.get('exp_ref') or '(no exp_ref)'} (subject {report.get('subject')}): "
          f"{report.get('outcome')}{tag}", file=out)
    print(f"  started {clock(report.get('started'), True)}, ended {clock(report.get('ended'), True)}, "
          f"ran {duration(report.get('started'), report.get('ended'))}; main sync {report.get('main_sync')}",
          file=out)
    for name, rig in report.get("rigs", {}).items():
        dropped = "" if rig.get("participating") else " (dropped)"
        print(f"  {name} [{rig.get('role')}]{dropped}: final {rig.get('final_status')}, "
              f"link {rig.get('final_link')}; files: {files_text(rig.get('files', {}))}", file=out)
        for step in rig.get("steps", []):
            error = f": {step['error']}" if step.get("error") else ""
            print(f"    {clock(step.get('start'))}  {step.get('step'):<9} {step.get('event'):<13} "
                  f"{step.get('outcome')}{error}", file=out)
        for inc in rig.get("incidents", []):
            until = clock(inc.get("to")) if inc.get("to") else "still open"
            print(f"    incident {inc.get('kind')} {clock(inc.get('from'))} to {until}: {inc.get('detail')}", file=out)
    moves = report.get("moves", [])
    if moves:
        print(f"  manipulator moves: {len(moves)}", file=out)
        for m in moves:
            print(f"    {clock(m.get('from'))}  {m.get('rig')}/{m.get('manipulator')} {m.get('action')}: "
                  f"{m.get('outcome')}", file=out)
    for note in report.get("notes", []):
        print(f"  note {clock(note.get('t'))}: {note.get('text')}", file=out)
    for problem in report.get("problems", []):
        print(f"  journal problem: {problem}", file=out)
    out.flush()


def run_report(args: argparse.Namespace) -> int:
    folder = find_session(args.exp_ref, resolve_data_dir(args.data_dir))
    try:
        report = save_report(folder, args.html)
    except (OSError, ValueError) as ex:  # a full disk, a read-only folder, a journal with NaN in it
        raise ConfigError(f"rigdeck report: cannot write the report in {folder}: {ex}") from None
    if args.json:
        print(json.dumps(report, allow_nan=False, default=str), flush=True)
    else:
        print_report(report, sys.stdout)
        print(f"  report: {folder / REPORT_JSON}, {Path(args.html) if args.html else folder / REPORT_HTML}")
    return 0 if report.get("outcome") == "completed" else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="what happened in a session: per rig steps, incidents, files, moves (also as HTML)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp_ref", metavar="EXP_REF", help="the session (YYYY-MM-DD_N_subject), or its folder")
    parser.add_argument("--data-dir", metavar="DIR", help="where sessions are (default: platform data dir, "
                        "or $RIGDECK_DATA_DIR)")
    parser.add_argument("--html", metavar="FILE", help="write the HTML page here (default: beside the journal)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(func=run_report)
