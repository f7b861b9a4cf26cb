"""Run every ``bench_*.py`` here in turn (``make bench``) and gather their final JSON lines.

Benchmarks are scripts, not timed tests: each prints a human table and, as its last line, one JSON
object with its figures. This runner prints everything as it comes and a combined JSON line at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    results: dict[str, object] = {}
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stdout.write(proc.stderr)
            failed.append(script.name)
            continue
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
        if lines:
            results[script.stem] = json.loads(lines[-1])
    print(json.dumps({"benchmarks": results, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
