"""``rigdeck run``: a whole multi-rig session from the terminal, or take over one a dead console left.

    rigdeck run --rigs remote_rigs.yaml --subject KS001 [--main-sync NAME] [--duration S]
                [--policy rollback|continue] [--cleanup] [--json] [--data-dir DIR]
    rigdeck run --attach 2026-11-22_1_KS001 [--stop | --interrupt | --wait] [--json]
    rigdeck run --unfinished [--json]
    ... [--transfer [DIR]]   after the stop, gather every rig's files (verified; see rigdeck transfer)

It runs info -> init -> start, keeps the session running for ``--duration`` seconds (or until Ctrl-C),
then stops every rig. One line per rig and step shows progress as replies arrive; a summary follows.
With ``--json`` the progress goes to stderr and stdout carries exactly one JSON object: exp_ref, each
rig's outcome and status, the incidents (a rig lost or reporting an error: rig, kind link_lost|rig_error,
from, to; to is null while it lasts), the journal path. Ctrl-C (or SIGTERM) stops a running session
cleanly; before the rigs run it interrupts whatever had started.

Exit status: 0 the session completed; 1 it failed, was degraded or a rig did not confirm; 2 bad input
(rigs file, subject, unknown session); 3 a rig of the session was lost or reported an error while it ran
(the incidents say which and when; 3 wins over 1: its data may have gaps); 130 interrupted before it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from app.report_html import save_report_quietly
from app.rig_view import clock
from app.rigset import LinkFactory, RigSet
from core.config import ConfigError, load_rigs
from core.journal import JOURNAL_NAME, find_unfinished, load_session
from core.paths import check_subject, resolve_data_dir, session_folder
from core.protocol import parse_exp_ref
from core.report import REPORT_HTML
from core.session import FINAL, Outcome, Phase, Progress, Session, StepResult, status_name
from transports.registry import TRANSPORTS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCIDENTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: tests swap this for in-memory links; the CLI builds real ones from the scheme registry
LINK_FACTORY: LinkFactory | None = None


class Printer:
    """Live progress: one line per rig reply / failure and per phase change."""

    def __init__(self, out: TextIO, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self.width = 8

    def __call__(self, p: Progress) -> None:
        if p.kind == "sent" and not self.verbose:
            return
        if p.kind == "phase":
            line = f"== {p.detail}"
        elif p.rig is None:
            if p.detail.endswith(" ...") and not self.verbose:
                return
            line = f"-- {p.step}: {p.detail}"
        else:
            line = f"   {p.step:<9} {p.rig:<{self.width}} {p.detail}"
        print(line, file=self.out, flush=True)


class Runner:
    """One CLI invocation: a session, the steps taken, and Ctrl-C handling."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_requested = asyncio.Event()
        self.signals = 0
        self.steps: list[StepResult] = []
        self.error: str | None = None
        self.interrupted_early = False
        #: the session being run (set as soon as it exists, so a second Ctrl-C can still report on it)
        self.session: Session | None = None
        #: the step a second Ctrl-C abandoned ("start-up" before there was a session), or None
        self.gave_up: str | None = None
        self.progress_out = sys.stderr if args.json else sys.stdout

    # ---------------------------------------------------------------- signals
    def install_signals(self) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
                pass

        def remove() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return remove

    def _on_signal(self, sig: int) -> None:
        self.signals += 1
        self.stop_requested.set()
        name = signal.Signals(sig).name
        if self.signals == 1:
            self.note(f"{name}: stopping the session (again to give up waiting)")
        else:
            session = self.session
            self.gave_up = "start-up" if session is None else (session.busy or f"the {session.phase.value} phase")
            self.note(f"{name} again: giving up")
            for task in asyncio.all_tasks():
                if task.get_name() == "rigdeck-run-main":
                    task.cancel()

    def note(self, text: str) -> None:
        print(f"rigdeck run: {text}", file=self.progress_out if not self.args.json else sys.stderr, flush=True)

    # ---------------------------------------------------------------- steps
    async def step(self, coro: Any) -> StepResult | None:
        """Run one session step unless Ctrl-C comes first (then cancel it and return None)."""
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        result = task.result()
        self.steps.append(result)
        return result

    async def wait_running(self, duration: float | None) -> None:
        if duration is None:
            self.note("running; Ctrl-C to stop")
            await self.stop_requested.wait()
        else:
            self.note(f"running for {duration:g} s; Ctrl-C to stop sooner")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), duration)

    async def finish(self, session: Session) -> None:
        """Stop a running session (or interrupt one that never got running)."""
        if session.phase is Phase.RUNNING or session.phase is Phase.STOPPED:
            self.steps.append(await session.stop())
        elif session.phase not in FINAL and session.folder is not None:
            result = await session.abort("interrupted from the console before the session ran")
            if result is not None:
                self.steps.append(result)
        if self.args.cleanup and session.phase in FINAL and session.can("cleanup"):
            self.steps.append(await session.cleanup())

    # ---------------------------------------------------------------- runs
    async def run_new(self, specs: Mapping[str, Any], data_dir: Path) -> Session:
        rigset = RigSet(specs, link_factory=LINK_FACTORY, poll_interval=self.args.poll, timeout=self.args.timeout)
        links = await rigset.open()
        if not links:
            await rigset.close()
            raise ConfigError(f"{self.args.rigs}: no enabled rig takes session messages")
        session = self.session = Session(links, rigset.specs, subject=self.args.subject, data_dir=data_dir,
                                         main_sync=self.args.main_sync, policy=self.args.policy,
                                         timeout=self.args.timeout, monitor=rigset.monitor)
        session.on_progress(Printer(self.progress_out, self.args.verbose > 0))
        await session.open()
        try:
            for name in ("info", "init", "start"):
                result = await self.step(getattr(session, name)())
                if result is None:
                    self.interrupted_early = True
                    break
                if not result.ok:
                    self.error = result.error
                    break
            if session.phase is Phase.RUNNING:
                await self.wait_running(self.args.duration)
            await self.finish(session)
        finally:
            await session.close()
            await rigset.close()
        return session

    async def run_attach(self, data_dir: Path) -> Session:
        args = self.args
        try:
            folder = session_folder(data_dir, parse_exp_ref(args.attach))
        except ValueError as ex:
            raise ConfigError(f"--attach: {ex}") from None
        if not (folder / JOURNAL_NAME).exists():
            raise ConfigError(f"--attach: no session journal for {args.attach} in {data_dir}")
        summary = load_session(folder)
        for problem in summary.problems:
            self.note(problem)
        override = load_rigs(args.rigs, TRANSPORTS) if args.rigs else None
        rigset = RigSet.from_journal(summary, override, link_factory=LINK_FACTORY, poll_interval=args.poll,
                                     timeout=args.timeout)
        links = await rigset.open()
        session = self.session = Session.attach(links, summary, rigset.specs, timeout=args.timeout,
                                                monitor=rigset.monitor)
        session.on_progress(Printer(self.progress_out, args.verbose > 0))
        await session.open()
        self.note(f"attached to {summary.exp_ref} (journal phase: {summary.phase}, "
                  f"{'finished' if summary.finished else 'unfinished'})")
        try:
            result = await self.step(session.status())
            if result is not None and args.attach_action == "stop":
                if session.phase in (Phase.RUNNING, Phase.STOPPED):
                    self.steps.append(await session.stop())
                elif any((session.statuses.get(n) or 0) in (10, 20) for n in session.participants) or \
                        session.phase not in FINAL:
                    self.steps.append(await session.interrupt("stopped by a reattached console", "Aborted"))
            elif result is not None and args.attach_action == "interrupt":
                self.steps.append(await session.interrupt("interrupted by a reattached console", "Aborted"))
            elif result is not None and args.attach_action == "wait" and session.phase is Phase.RUNNING:
                await self.wait_running(args.duration)
                await self.finish(session)
        finally:
            await session.close()
            await rigset.close()
        return session


# -------------------------------------------------------------------------------------- reporting

def rig_report(session: Session, steps: list[StepResult]) -> dict[str, dict[str, Any]]:
    """Per rig: role, last status, link, and the outcome over every step (first failure wins)."""
    report: dict[str, dict[str, Any]] = {}
    for name in session.rigs:
        failure: tuple[str, Outcome] | None = None
        last: Outcome | None = None
        for result in steps:
            for outcome_map in (result.outcomes, result.rollback, result.stood_down):
                o = outcome_map.get(name)
                if o is None:
                    continue
                last = o
                if not o.ok and failure is None:
                    failure = (result.step, o)
        state = session.state.get(["rigs", name], {}) or {}
        entry: dict[str, Any] = {
            "role": session.role(name),
            "status": session.statuses.get(name),
            "status_name": status_name(session.statuses.get(name)),
            "link": state.get("link"),
            "participating": name in session.participants,
            "outcome": "ok" if failure is None else failure[1].result,
            "failed_step": failure[0] if failure else None,
            "error": failure[1].error if failure else None,
            "rtt_ms": last.rtt_ms if last else None,
        }
        report[name] = entry
    return report


def incidents_report(session: Session) -> list[dict[str, Any]]:
    """Every incident with the session's rigs while it was watched (the journal has each opening/closing)."""
    return [incident.to_dict() for _, incident in sorted(session.incidents.items())]


def while_running(session: Session, incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incidents that touch the session's data: with a participant, after EXPSTART (not a rig that was
    down before and was left out)."""
    if session.started is None:
        return []
    return [i for i in incidents if i["rig"] in session.participants
            and (i["to"] is None or i["to"] >= session.started)]


def summary_dict(session: Session, runner: Runner) -> dict[str, Any]:
    failed_steps = [s for s in runner.steps if not s.ok]
    error = runner.error or (failed_steps[-1].error if failed_steps else None)
    if runner.interrupted_early:
        error = "interrupted before the session ran"
    if runner.gave_up:
        error = f"gave up waiting (second Ctrl-C) during {runner.gave_up}"
        if session.exp_ref and session.phase not in FINAL:
            data_dir = f" --data-dir {runner.args.data_dir}" if runner.args.data_dir else ""
            error += f"; rigs may still be running: rigdeck run --attach {session.exp_ref} --stop{data_dir}"
    return {
        "exp_ref": session.exp_ref,
        "subject": session.subject,
        "phase": session.phase.value,
        "outcome": session.outcome or ("interrupted" if runner.interrupted_early else session.phase.value),
        "ok": session.outcome == "completed" and not failed_steps and not runner.interrupted_early
              and not runner.gave_up,
        "degraded": session.degraded,
        "main_sync": session.main_sync,
        "policy": session.policy.value,
        "error": error,
        "folder": str(session.folder) if session.folder else None,
        "journal": str(session.journal_path) if session.journal_path else None,
        "description": str(session.description_path) if session.description_path else None,
        "steps": [{"step": s.step, "ok": s.ok, "error": s.error, "dropped": s.dropped, "warnings": s.warnings}
                  for s in runner.steps],
        "rigs": rig_report(session, runner.steps),
        "incidents": incidents_report(session),
    }


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    ref = summary["exp_ref"] or "(no exp_ref)"
    tag = " [degraded]" if summary["degraded"] else ""
    print(f"\nsession {ref} (subject {summary['subject']}): {summary['outcome']}{tag}", file=out)
    if summary["error"]:
        print(f"  error: {summary['error']}", file=out)
    rigs = summary["rigs"]
    width = max([4, *map(len, rigs)])
    print(f"  {'rig':<{width}}  {'role':<11} {'status':<11} {'link':<11} outcome", file=out)
    for name, r in rigs.items():
        outcome = "ok" if r["outcome"] == "ok" else f"{r['outcome']} in {r['failed_step']}: {r['error']}"
        if not r["participating"]:
            outcome += " (dropped)"
        print(f"  {name:<{width}}  {r['role']:<11} {r['status_name']:<11} {str(r['link']):<11} {outcome}", file=out)
    for incident in summary["incidents"]:
        what = "lost" if incident["kind"] == "link_lost" else "reported an error"
        span = f"from {clock(incident['from'])} to {clock(incident['to'])}" if incident["to"] is not None \
            else f"from {clock(incident['from'])}, not back"
        detail = f" ({incident['detail']})" if incident.get("detail") else ""
        print(f"  incident: {incident['rig']} {what} {span}{detail}", file=out)
    if summary["journal"]:
        print(f"  journal: {summary['journal']}", file=out)
        print(f"  description: {summary['description']}", file=out)
    if summary.get("report"):
        print(f"  report: {summary['report']}", file=out)
    out.flush()


def exit_code(summary: dict[str, Any], runner: Runner, session: Session | None = None) -> int:
    if runner.gave_up:
        return EXIT_INTERRUPTED
    if runner.interrupted_early and summary["phase"] not in ("stopped",):
        return EXIT_INTERRUPTED
    if session is not None and while_running(session, summary["incidents"]):
        return EXIT_INCIDENTS
    return EXIT_OK if summary["ok"] else EXIT_FAILED


# -------------------------------------------------------------------------------------- entry points

async def _main(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    if args.unfinished:
        return list_unfinished(data_dir, args.json)
    runner = Runner(args)
    remove = runner.install_signals()
    asyncio.current_task().set_name("rigdeck-run-main")  # type: ignore[union-attr]
    try:
        if args.attach:
            session = await runner.run_attach(data_dir)
        else:
            if not args.rigs or not args.subject:
                raise ConfigError("rigdeck run needs --rigs FILE and --subject NAME (or --attach EXP_REF)")
            try:
                check_subject(args.subject)
            except ValueError as ex:
                raise ConfigError(f"--subject: {ex}") from None
            specs = load_rigs(args.rigs, TRANSPORTS)
            if args.main_sync is not None and args.main_sync not in specs:
                raise ConfigError(f"--main-sync {args.main_sync!r}: no such rig in {args.rigs} ({sorted(specs)})")
            session = await runner.run_new(specs, data_dir)
    except asyncio.CancelledError:
        if runner.gave_up is None:
            raise
        # a second Ctrl-C cancelled this task: no traceback, report what is known and how to finish the job
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        if runner.session is None:
            return EXIT_INTERRUPTED
        session = runner.session
    finally:
        remove()
    summary = summary_dict(session, runner)
    if args.transfer is not None and session.exp_ref and session.phase.value in ("stopped", "failed", "aborted"):
        summary["transfer"] = await transfer_after(session, args, data_dir, runner.progress_out)
        summary["ok"] = summary["ok"] and all(r["verified"] or r.get("skipped")
                                              for r in summary["transfer"]["rigs"].values())
    # the report after the transfer: it says where the files went and whether they are verified
    if session.folder is not None and save_report_quietly(session.folder) is not None:
        summary["report"] = str(session.folder / REPORT_HTML)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print_summary(summary, sys.stdout)
    return exit_code(summary, runner, session)


async def transfer_after(session: Session, args: argparse.Namespace, data_dir: Path, out: TextIO) -> dict[str, Any]:
    """``--transfer [DIR]``: gather the session's files from its rigs right after the stop (see
    ``rigdeck transfer``); the result goes into the summary."""
    from app.commands.transfer import ProgressDisplay
    from app.transfers import TransferManager

    manager = TransferManager(data_dir, to=args.transfer or None)
    display = ProgressDisplay(out)
    rigs = {name: session.specs[name] for name in session.participants if name in session.specs}
    job = manager.start(session.exp_ref or "", rigs, rigs)
    manager.subscribe(lambda: display(job))
    try:
        await manager.wait(job.exp_ref)
    finally:
        await manager.close()
    display(job)
    return job.summary()


def list_unfinished(data_dir: Path, as_json: bool) -> int:
    sessions = find_unfinished(data_dir)
    if as_json:
        print(json.dumps([{"exp_ref": s.exp_ref, "phase": s.phase, "rigs": s.participants,
                           "journal": str(s.path)} for s in sessions]))
    elif not sessions:
        print(f"no unfinished sessions in {data_dir}")
    else:
        for s in sessions:
            print(f"{s.exp_ref}  {s.phase:<12} rigs: {', '.join(s.participants)}  ({s.path})")
    return EXIT_OK


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a multi-rig session headless (or reattach to one)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rigs", metavar="FILE", help="remote_rigs.yaml (with --attach: addresses override)")
    parser.add_argument("--subject", help="subject name (folder-safe)")
    parser.add_argument("--main-sync", metavar="NAME", help="the rig that owns the clock (default: the rigs decide)")
    parser.add_argument("--duration", type=_positive, metavar="SECONDS", help="run time (default: until Ctrl-C)")
    parser.add_argument("--policy", choices=["rollback", "continue"], default="rollback",
                        help="when some rigs fail to init/start: interrupt all (default) or go on without them")
    parser.add_argument("--cleanup", action="store_true", help="send EXPCLEANUP after the stop (rigs back to idle)")
    parser.add_argument("--timeout", type=_positive, default=5.0, help="per-rig reply timeout, s (default 5)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                        help="EXPSTATUS poll period for rigs that don't push state (default 1; 0 = off)")
    parser.add_argument("--data-dir", metavar="DIR", help="session folders go here (default: platform data dir, "
                        "or $RIGDECK_DATA_DIR)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--attach", metavar="EXP_REF", help="reattach to a session a dead console left running")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--stop", dest="attach_action", action="store_const", const="stop",
                        help="with --attach: stop the session's rigs")
    action.add_argument("--interrupt", dest="attach_action", action="store_const", const="interrupt",
                        help="with --attach: interrupt the session's rigs")
    action.add_argument("--wait", dest="attach_action", action="store_const", const="wait",
                        help="with --attach: keep it running for --duration (or until Ctrl-C), then stop")
    parser.add_argument("--unfinished", action="store_true", help="list sessions whose journal never finished")
    parser.add_argument("--transfer", nargs="?", const="", default=None, metavar="DIR",
                        help="after the stop, gather every rig's files (into DIR, default $RIGDECK_TRANSFER_DIR "
                        "or the session folder) and verify them; see rigdeck transfer")
    parser.set_defaults(func=lambda args: asyncio.run(_main(args)), attach_action=None)
