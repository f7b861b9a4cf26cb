"""A driver's health and its failure, as the console shows them, from real ``rigdeck serve`` rigs: a pushing
(zmq://) rig's drivers' tree reaches the console's live state and says the crash in plain words at once; a
polled (udp://) rig's status report says it in plain words too."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

from e2e import ROOT
from helpers import run, wait_until
from rigprocs import rig_processes

from app.rig_view import NO_DRIVER_HEALTH, driver_health, drivers_text, error_cell
from app.rigset import RigSet
from core.protocol import ExpMessage as M

PROGRAM = ROOT / "tests" / "programs" / "fake_acquisition.py"
REF = "2026-01-01_1_KS001"


def test_a_program_crash_reaches_the_consoles_rig_row_in_plain_words(tmp_path: Path) -> None:
    command = {"run": [sys.executable, str(PROGRAM), "--record", "{session_path}/calls.jsonl", "--crash-after", "0.5"]}
    rigs = {"polled": {"drivers": {"commands": {"acquisition": command}}},
            "pushing": {"uris": ["zmq://127.0.0.1:0"], "drivers": {"commands": {"acquisition": command}}}}
    with rig_processes(tmp_path, rigs) as cluster:

        async def main() -> dict[str, dict]:
            rigset = RigSet(cluster.specs, poll_interval=0.2)
            rigset.prepare()
            links = await rigset.open()
            rig = lambda name: rigset.state.get(["rigs", name]) or {}  # noqa: E731
            try:
                for link in links.values():
                    await link.request(M.EXPINIT, {"exp_ref": REF}, timeout=10)
                    await link.request(M.EXPSTART, REF, {}, timeout=20)
                await wait_until(lambda: any(d.state == "running" for d in driver_health(rig("pushing"))), 20,
                                 "the pushing rig's program running, as its health says")
                running = drivers_text(rig("pushing"))
                await wait_until(lambda: all(error_cell(rig(n)).text for n in rigs), 20, "both rows in error")
                seen = {name: copy.deepcopy(rig(name)) for name in rigs}  # the state lives on: keep now's
                for link in links.values():
                    await link.request(M.EXPEND, {}, timeout=20)
                return {"running": {"text": running}, **seen}
            finally:
                await rigset.close()

        seen = run(main())
    assert seen["running"]["text"].startswith("acquisition (command): running")
    for name in rigs:  # either way: which driver, what happened, in words (no protocol preamble)
        text = error_cell(seen[name]).text
        assert re.match(r"[Dd]river acquisition( failed)?: [Pp]rogram acquisition ended mid-session \(exit code 3",
                        text) and "DriverFault" not in text, text
    assert "acquisition (command): ERROR Program acquisition ended mid-session" in drivers_text(seen["pushing"])
    assert drivers_text(seen["polled"]) == NO_DRIVER_HEALTH
