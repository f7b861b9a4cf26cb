"""``rigdeck transfer``: gather a session's files from its rigs into one verified folder (or resume doing so).

    rigdeck transfer EXP_REF [--rigs FILE] [--to DIR] [--json] [--data-dir DIR] [--max-rate MB/S]
    rigdeck transfer --pending [--rigs FILE] [--to DIR] [--json] [--days N]

Each rig's files go to ``<DIR>/<subject>/<date>/<NNN>/<rig>/`` (DIR: ``--to``, else ``$RIGDECK_TRANSFER_DIR``,
else the console's data folder, i.e. the session's own folder), each file checked against the rig's checksum
(XXH3-128), with a ``SHA256SUMS`` file (the rig's SHA-256s) that ``sha256sum -c`` accepts. Run it again
after any interruption: only what is missing is fetched. The session's rigs come from its journal
(addresses from ``--rigs`` when it names them). ``--pending`` resumes every finished session whose files are
not all verified. Progress per rig and file goes to stderr; ``--json`` prints one object ``{"exp_ref", "to",
"rigs": {NAME: {"files", "bytes", "verified", "error"}}}`` (``--pending``: ``{"sessions": [...]}``). Exit 0
only when every file of every transferring rig is verified, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from app.transfers import TransferManager, human_bytes, open_zmq_source
from core.config import ConfigError, RigSpec, load_rigs
from core.journal import JOURNAL_NAME, load_session
from core.paths import resolve_data_dir, session_folder
from core.protocol import format_exp_ref, parse_exp_ref
from core.transfer import SessionTransfer
from transports.registry import TRANSPORTS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ProgressDisplay:
    """Progress per rig and file: a tqdm bar per rig on a terminal, plain lines (one per file done) otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.bars: dict[tuple[str, str], Any] = {}
        self.said: set[tuple[str, str, str]] = set()
        self.tty = out.isatty()

    def __call__(self, job: SessionTransfer) -> None:
        for name, rig in job.rigs.items():
            if self.tty and rig.state == "fetching":
                self._bar(job, name, rig)
            current = next((f for f in sorted(rig.files.values(), key=lambda f: f.path) if not f.verified), None)
            for f in rig.files.values():
                if f.verified:
                    self._say(job, name, f.path, f"  {name:<10} {f.path}  {human_bytes(f.size)}  verified")
            if rig.state in ("verified", "failed", "skipped"):
                detail = rig.skipped or (rig.error if rig.state == "failed" else
                                         f"{len(rig.files)} file(s), {human_bytes(rig.total_bytes)} verified")
                self._say(job, name, "", f"{job.exp_ref} {name}: {rig.state}: {detail}")
                bar = self.bars.pop((job.exp_ref, name), None)
                if bar is not None:
                    bar.close()
            elif current is not None and (job.exp_ref, name) in self.bars:
                self.bars[(job.exp_ref, name)].set_postfix_str(current.path, refresh=False)

    def _bar(self, job: SessionTransfer, name: str, rig: Any) -> None:
        key = (job.exp_ref, name)
        if key not in self.bars:
            from tqdm import tqdm

            self.bars[key] = tqdm(total=rig.total_bytes, desc=name, unit="B", unit_scale=True, file=self.out,
                                  leave=False, position=len(self.bars))
        bar = self.bars[key]
        bar.update(rig.done_bytes - bar.n)

    def _say(self, job: SessionTransfer, rig: str, path: str, line: str) -> None:
        key = (job.exp_ref, rig, path)
        if key not in self.said:
            self.said.add(key)
            if (job.exp_ref, rig) in self.bars:
                self.bars[(job.exp_ref, rig)].write(line, file=self.out)
            else:
                print(line, file=self.out, flush=True)


def session_rig_specs(exp_ref: str, data_dir: Path, specs: Mapping[str, RigSpec] | None
                      ) -> dict[str, RigSpec | dict[str, Any]]:
    """The session's rigs: its journal's participants (addresses from the rigs file when it names them), else
    every session rig of the rigs file."""
    folder = session_folder(data_dir, exp_ref)
    if (folder / JOURNAL_NAME).exists():
        summary = load_session(folder)
        names = summary.participants or list(summary.rigs)
        return {n: (specs or {}).get(n) or summary.rigs.get(n, {}) for n in names}
    if specs is None:
        raise ConfigError(f"no session journal for {exp_ref} in {data_dir}; give the rigs with --rigs FILE")
    return {n: s for n, s in specs.items() if s.in_sessions}


async def _main(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    specs = load_rigs(args.rigs, TRANSPORTS) if args.rigs else None
    max_rate = args.max_rate * 1e6 if args.max_rate else None
    manager = TransferManager(data_dir, to=args.to, open_source=open_zmq_source(max_rate))
    display = ProgressDisplay(sys.stderr)
    jobs: list[SessionTransfer] = []
    manager.subscribe(lambda: [display(j) for j in jobs])
    try:
        if args.pending:
            pending = manager.pending(args.days, specs)
            if not pending:
                print(f"every finished session in {data_dir} is transferred", file=sys.stderr, flush=True)
            manager.resume(pending, specs)
            jobs.extend(manager.jobs.values())
        else:
            try:
                exp_ref = format_exp_ref(parse_exp_ref(args.exp_ref))
            except ValueError as ex:
                raise ConfigError(f"EXP_REF: {ex}") from None
            jobs.append(manager.start(exp_ref, session_rig_specs(exp_ref, data_dir, specs), specs))
        for job in list(jobs):
            await manager.wait(job.exp_ref)
            display(job)
    finally:
        await manager.close()
    ok = all(j.verified for j in jobs)
    if args.json:
        if args.pending:
            print(json.dumps({"sessions": [j.summary() for j in jobs]}), flush=True)
        else:
            print(json.dumps(jobs[0].summary()), flush=True)
    else:
        for job in jobs:
            print_summary(job, sys.stdout)
    return EXIT_OK if ok else EXIT_FAILED


def print_summary(job: SessionTransfer, out: TextIO) -> None:
    print(f"{job.exp_ref} -> {job.to}: {'verified' if job.verified else 'NOT all verified'}", file=out)
    for name, rig in job.rigs.items():
        detail = rig.skipped or (f"{len(rig.files)} file(s), {human_bytes(rig.total_bytes)}, "
                                 f"{human_bytes(rig.fetched)} fetched now"
                                 + ("" if rig.verified else f"; error: {rig.error or rig.state}"))
        print(f"  {name:<12} {'verified' if rig.verified else '-':<9} {detail}", file=out)
    out.flush()


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("transfer", help="gather a session's files from its rigs (verified, resumable)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp_ref", nargs="?", metavar="EXP_REF", help="the session, e.g. 2026-11-30_1_KS001")
    parser.add_argument("--rigs", metavar="FILE", help="remote_rigs.yaml (rigs' addresses and files: endpoints)")
    parser.add_argument("--to", metavar="DIR", help="destination root (default $RIGDECK_TRANSFER_DIR, else the "
                        "data folder)")
    parser.add_argument("--data-dir", metavar="DIR", help="the console's data folder (journals)")
    parser.add_argument("--pending", action="store_true", help="resume every session not yet all verified")
    parser.add_argument("--days", type=int, default=None, metavar="N", help="with --pending: only the last N days")
    parser.add_argument("--max-rate", type=_positive, metavar="MB/S", help="pace the transfer (megabytes/s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")

    def run(args: argparse.Namespace) -> int:
        if bool(args.exp_ref) == bool(args.pending):
            raise ConfigError("rigdeck transfer needs EXP_REF or --pending (not both)")
        return asyncio.run(_main(args))

    parser.set_defaults(func=run)
