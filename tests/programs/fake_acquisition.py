"""A stand-in acquisition program for the external-program driver tests (run as a real subprocess).

It appends JSON lines to ``--record PATH``: ``{"event": "started", "argv", "cwd", "env": {RIGDECK_*,
CAMERA}}`` at start and ``{"event": "stopped", "signal": NAME}`` when a stop signal arrives, so a test
can check what it was given and how it was stopped. Options:

--ready-after S     print "camera ready" after S seconds (for the ``ready`` pattern)
--crash-after S     print a last line and exit with code 3 after S seconds (a crash mid-session)
--ignore-stop       ignore SIGINT/SIGBREAK (the rig must escalate to SIGTERM)
--stdin-quit        finish when a line "q" arrives on stdin
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--ready-after", type=float)
    parser.add_argument("--crash-after", type=float)
    parser.add_argument("--ignore-stop", action="store_true")
    parser.add_argument("--stdin-quit", action="store_true")
    args, _rest = parser.parse_known_args()

    def record(**fields: object) -> None:
        with open(args.record, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), "pid": os.getpid(), **fields}) + "\n")

    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if args.ignore_stop and name in ("SIGINT", "SIGBREAK"):
            record(event="ignored", signal=name)
            return
        record(event="stopped", signal=name)
        print(f"stopping on {name}", flush=True)
        done.set()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    if args.stdin_quit:
        def read_stdin() -> None:
            for line in sys.stdin:
                if line.strip() == "q":
                    record(event="stopped", signal="stdin")
                    done.set()
                    return
        threading.Thread(target=read_stdin, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k.startswith("RIGDECK_") or k == "CAMERA"}
    record(event="started", argv=sys.argv[1:], cwd=os.getcwd(), env=env)  # after the handlers: stoppable now
    print(f"acquisition started pid {os.getpid()}", flush=True)
    start = time.monotonic()
    ready_said = False
    while not done.wait(0.02):
        elapsed = time.monotonic() - start
        if args.ready_after is not None and not ready_said and elapsed >= args.ready_after:
            print("camera ready", flush=True)
            ready_said = True
        if args.crash_after is not None and elapsed >= args.crash_after:
            print("fatal: camera disconnected", file=sys.stderr, flush=True)
            record(event="crashed")
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
