"""A session's report: what happened to each rig, read back from the journal (no Qt, no network).

The journal (:mod:`core.journal`) is the one record a session leaves that survives a console's death, so
the report is built from it alone, plus what the transfer step leaves beside it (a ``SHA256SUMS`` per rig
folder, written only once that rig's files are verified). The same dict feeds three readers: the
``_rigdeck_report.json`` beside the journal, the HTML page (``app/report_html.py``) and the window's timeline
(``app/gui/timeline.py``). Times are epoch seconds throughout; readers format them.

Records read (see :mod:`core.session`, :mod:`core.fan_out`): ``session``/``attach`` (rigs and roles),
``main_sync``, ``send`` + ``reply``/``error``/``timeout``/``skipped`` (one step of one rig: paired
first-in first-out by step, rig and event), ``status``, ``link``, ``incident`` (an open one is written
again when it closes: the later record wins), ``phase``, ``note``/``refused``/``rollback``/``degraded``,
and ``move`` (a manipulator move made through the console).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from core.journal import DESCRIPTION_NAME, FINAL_PHASES, JOURNAL_NAME, read_description, read_journal
from core.monitor import status_name
from core.transfer import STATE_NAME as TRANSFER_RECORD  # the transfer names the files it writes
from core.transfer import SUMS_NAME

REPORT_JSON = "_rigdeck_report.json"
REPORT_HTML = "_rigdeck_report.html"
REPORT_VERSION = 1
#: the session-level records shown as notes (in the report's words: what the engine decided and why)
NOTE_KINDS = ("note", "refused", "rollback", "degraded", "decision")
#: no journal time is later than this (year 3000): anything beyond is damage, not a date
LATEST = 32503680000.0
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def seconds(value: Any) -> float | None:
    """An epoch time from a journal field, or None for anything else (a hand-edited or damaged journal must
    give a report, not a traceback)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
            and 0 <= value < LATEST:
        return float(value)
    return None


def record_time(rec: dict[str, Any]) -> float | None:
    """When a record happened: ``at`` for records made before the journal file existed, else ``t``."""
    return seconds(rec.get("at", rec.get("t")))


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def session_role(name: str, spec_role: str | None, main_sync: str | None) -> str:
    """A rig's role in the session: main sync once it is settled, else what the rigs file said."""
    if main_sync is not None:
        if name == main_sync:
            return "main_sync"
        return "aux" if spec_role in (None, "main_sync") else spec_role
    return spec_role or "aux"


# ------------------------------------------------------------------------------------------ files

def load_transfer_record(folder: Path) -> dict[str, Any]:
    """The transfer's record beside the journal (``_rigdeck_transfer.json``: destination, per rig state,
    error, files), or ``{}`` when there is none or it cannot be read."""
    try:
        data = json.loads((folder / TRANSFER_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _files_state(state: str, **fields: Any) -> dict[str, Any]:
    return {"state": state, "files": 0, "bytes": 0, "verified": False, "at": None, "missing": [], "error": None,
            **fields}


def rig_files(folder: Path, name: str, info: dict[str, Any] | None = None,
              transfer: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the transfer step left for one rig: files listed in its ``SHA256SUMS``, their bytes, verified.

    The sums file is written only after every file was checked, so its presence (with every listed file
    there at its listed path) is what "verified" means here; the report never re-hashes gigabytes. It is
    looked for in the transfer's destination (its record says where; else the session folder). Without it,
    the record says how far the transfer got and why it failed; a rig that opted out (``transfer: false``)
    or has no file endpoint (an iblrig rig copies its own data) is "no transfer".
    """
    info = info or {}
    options = info.get("options") if isinstance(info.get("options"), dict) else {}
    rigs = (transfer or {}).get("rigs")
    record = rigs.get(name) if isinstance(rigs, dict) and isinstance(rigs.get(name), dict) else {}
    if options.get("transfer") is False or record.get("state") == "skipped":
        return _files_state("no transfer", error=record.get("skipped") or "transfer: false in the rigs file")
    to = (transfer or {}).get("to")
    rig_dir = (Path(to) if isinstance(to, str) and to else folder) / name
    sums = rig_dir / SUMS_NAME
    try:
        if Path(name).name != name or name in (".", ".."):  # a damaged journal's rig name: no folder outside
            raise OSError(f"not a folder name: {name!r}")
        text = sums.read_text(encoding="utf-8", errors="replace")
        at = sums.stat().st_mtime
    except OSError:
        if not record and not options.get("files") and not str(info.get("uri", "")).lower().startswith("zmq://"):
            return _files_state("no transfer", error="no file endpoint; the rig copies its own data")
        return _record_progress(record)
    count, size, missing = 0, 0, []
    for line in text.splitlines():
        match = _SUM_LINE.match(line.strip())
        if not match:
            continue
        count += 1
        try:
            size += (rig_dir / match.group(2)).stat().st_size
        except OSError:
            missing.append(match.group(2))
    verified = not missing
    return _files_state("verified" if verified else "files missing", files=count, bytes=size, verified=verified,
                        at=at, missing=missing)


def _record_progress(record: dict[str, Any]) -> dict[str, Any]:
    """A rig's files not (yet) verified: what the transfer record knows, else "not transferred"."""
    files = record.get("files") if isinstance(record.get("files"), dict) else {}
    if not record:
        return _files_state("not transferred")
    sizes = [f.get("size") for f in files.values() if isinstance(f, dict) and isinstance(f.get("size"), int)]
    error = record.get("error") if isinstance(record.get("error"), str) else None
    return _files_state("failed" if record.get("state") == "failed" else "not verified yet", files=len(files),
                        bytes=sum(sizes), error=error)


# ---------------------------------------------------------------------------------------- building

def _new_rig(info: dict[str, Any]) -> dict[str, Any]:
    uri = str(info.get("uri") or "")
    return {"uri": uri, "transport": uri.split("://")[0] if "://" in uri else "", "spec_role": info.get("role"),
            "options": info.get("options") if isinstance(info.get("options"), dict) else {},
            "steps": [], "statuses": [], "links": [], "incidents": [], "participating": True}


def build_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The report of the session whose journal is at ``path`` (the file or its session folder).

    Never raises for bad journal content (its problems are listed in the report); an unreadable file
    raises OSError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / JOURNAL_NAME
    read = read_journal(path)
    folder = path.parent
    head: dict[str, Any] = {"exp_ref": None, "subject": None, "main_sync": None, "policy": None}
    rigs: dict[str, dict[str, Any]] = {}
    phases: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    incidents: dict[tuple[str, str, Any], dict[str, Any]] = {}
    open_sends: dict[tuple[str, str, str], deque[dict[str, Any]]] = defaultdict(deque)
    participants: list[str] | None = None
    times = [t for t in (record_time(r) for r in read.records) if t is not None]
    transfer = load_transfer_record(folder)

    def rig(name: str) -> dict[str, Any]:
        # a rig the session record does not list (a manipulator rig's link changes): watched, not in the session
        return rigs.setdefault(name, _new_rig({"role": "watched"}))

    for rec in read.records:
        kind, t, name = rec.get("kind"), record_time(rec), rec.get("rig")
        if kind in ("session", "attach"):
            head.update({k: rec[k] for k in head if rec.get(k) is not None})
            for rig_name, info in (rec.get("rigs") or {}).items() if isinstance(rec.get("rigs"), dict) else ():
                if isinstance(info, dict):
                    entry = rigs.setdefault(str(rig_name), _new_rig(info))
                    entry.update({k: v for k, v in _new_rig(info).items() if k in ("uri", "transport", "spec_role",
                                                                                   "options") and v})
        if kind == "main_sync" and rec.get("main_sync"):
            head["main_sync"] = rec["main_sync"]
        if isinstance(rec.get("participants"), list):
            participants = _names(rec["participants"])
        if kind == "phase":
            phases.append({"t": t, "phase": str(rec.get("phase")), "degraded": bool(rec.get("degraded")),
                           "reason": rec.get("reason")})
        elif kind in NOTE_KINDS:
            notes.append({"t": t, "kind": kind, "text": _note_text(rec)})
        elif kind == "move" and isinstance(name, str):
            moves.append(_move(rec, t))
            continue
        elif kind == "incident" and isinstance(name, str):
            since = seconds(rec.get("from"))
            incidents[(name, str(rec.get("incident")), since)] = {
                "rig": name, "kind": str(rec.get("incident")), "from": since, "to": seconds(rec.get("to")),
                "detail": rec.get("detail")}
            continue
        if not isinstance(name, str):
            continue
        entry = rig(name)
        if kind == "link" and isinstance(rec.get("state"), str):
            entry["links"].append({"t": t, "state": rec["state"], "error": rec.get("error")})
        status = rec.get("status")
        if isinstance(status, int) and not isinstance(status, bool) and kind != "send":
            last = entry["statuses"][-1]["status"] if entry["statuses"] else None
            if status != last:
                entry["statuses"].append({"t": t, "status": status, "name": status_name(status)})
        step, event = rec.get("step"), rec.get("event")
        if isinstance(step, str) and isinstance(event, str):
            key3 = (step, name, event)
            if kind == "send":
                open_sends[key3].append({"step": step, "event": event, "start": t, "end": None,
                                         "outcome": "no answer recorded", "status": None, "error": None,
                                         "rtt_ms": None})
                entry["steps"].append(open_sends[key3][-1])
            elif kind == "skipped" or "rtt_ms" in rec:  # reply / error / timeout...: an Outcome
                item = open_sends[key3].popleft() if open_sends[key3] else None
                if item is None:
                    item = {"step": step, "event": event, "start": t}
                    entry["steps"].append(item)
                item.update({"end": t, "outcome": "ok" if kind == "reply" else str(kind), "status": rec.get("status"),
                             "error": rec.get("error"), "rtt_ms": rec.get("rtt_ms")})

    for inc in incidents.values():
        rig(inc["rig"])["incidents"].append(inc)
    main_sync = head["main_sync"]
    started = next((p["t"] for p in phases if p["phase"] == "running"), None)
    final = phases[-1] if phases else None
    ended = final["t"] if final and final["phase"] in FINAL_PHASES else None
    for rig_name, entry in rigs.items():
        entry["role"] = session_role(rig_name, entry.pop("spec_role"), main_sync)
        entry["participating"] = participants is None or rig_name in participants
        last = entry["statuses"][-1] if entry["statuses"] else None
        entry["final_status"] = last["name"] if last else "never answered"
        entry["final_link"] = entry["links"][-1]["state"] if entry["links"] else None
        entry["errors"] = [s["error"] for s in entry["steps"] if s.get("error")] + \
                          [link["error"] for link in entry["links"] if link.get("error")]
        entry["files"] = rig_files(folder, rig_name, entry, transfer)
        entry["incidents"].sort(key=lambda i: i["from"] or 0)
    return {
        "version": REPORT_VERSION, "exp_ref": head["exp_ref"], "subject": head["subject"],
        "folder": str(folder), "journal": str(path), "main_sync": main_sync, "policy": head["policy"],
        "phase": final["phase"] if final else "idle", "degraded": bool(final and final["degraded"]),
        "outcome": _outcome(folder, final), "started": started, "ended": ended,
        "first": min(times, default=None), "last": max(times, default=None),
        "rigs": rigs, "phases": phases, "notes": notes, "moves": moves, "depth": depth_traces(moves),
        "problems": read.problems, "records": len(read.records),
    }


def _note_text(rec: dict[str, Any]) -> str:
    kind = rec.get("kind")
    if kind == "note":
        return str(rec.get("text", ""))
    if kind == "refused":
        return f"{rec.get('step')} refused: {rec.get('error')}"
    if kind == "rollback":
        return f"{rec.get('step')} failed on {', '.join(_names(rec.get('failed')))}: rolled back"
    if kind == "degraded":
        return f"continuing without {', '.join(_names(rec.get('dropped')))} after {rec.get('step')}"
    return f"{rec.get('step')}: chose {rec.get('policy')} after {', '.join(_names(rec.get('failed')))} failed"


def _move(rec: dict[str, Any], t: float | None) -> dict[str, Any]:
    return {"rig": rec.get("rig"), "manipulator": str(rec.get("manipulator")), "action": rec.get("action"),
            "from": seconds(rec.get("from", t)), "t": t, "target": rec.get("target"), "before": rec.get("before"),
            "reached": rec.get("reached"), "speed": rec.get("speed"), "outcome": rec.get("outcome"),
            "error": rec.get("error")}


def _depth(position: Any) -> float | None:
    """The depth (w) of a journaled position: a number (set_depth) or an {x, y, z, w} mapping."""
    if isinstance(position, dict):
        position = position.get("w")
    if isinstance(position, int | float) and not isinstance(position, bool) and math.isfinite(position):
        return float(position)
    return None


def depth_traces(moves: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """Per probe (``rig/manipulator``) the depth over time the moves tell: where each started and ended."""
    traces: dict[str, list[list[float]]] = {}
    for move in moves:
        trace = traces.setdefault(f"{move['rig']}/{move['manipulator']}", [])
        for when, where in ((move.get("from"), move.get("before")), (move.get("t"), move.get("reached"))):
            depth = _depth(where)
            if isinstance(when, int | float) and depth is not None:
                trace.append([float(when), depth])
    return {probe: sorted(points) for probe, points in traces.items() if points}


def _outcome(folder: Path, final: dict[str, Any] | None) -> str:
    """How the session ended: the description's word when it has one, else from the last phase."""
    try:
        described = read_description(folder / DESCRIPTION_NAME).get("outcome")
        if isinstance(described, str) and described not in ("pending", "running"):
            return described
    except Exception:  # no description, or bad YAML: the journal alone decides
        pass
    if final is None:
        return "not started"
    phase = final["phase"]
    if phase == "stopped":
        return "completed_with_errors" if final["degraded"] else "completed"
    return str(phase) if phase in FINAL_PHASES else f"unfinished ({phase})"


# ------------------------------------------------------------------------------------------ writing

def write_text_atomic(path: Path, text: str) -> None:
    """Write beside the target, fsync, then rename over it: a reader (or a crash) never sees half a report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
