"""The external-program driver through the rig service, with real subprocesses (tests/programs/fake_acquisition.py)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import run, wait_until

from core.config import ConfigError
from core.protocol import ExpMessage as M
from core.rig_config import parse_rig_config
from core.service import DriverFault, RigService, ServiceError
from transports.registry import TRANSPORTS

PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "fake_acquisition.py"
REF = "2026-11-30_1_KS001"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper that is not ours counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError, IndexError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def rig(tmp_path: Path, extra_args: list[str] | None = None, **command: Any) -> RigService:
    body = {"run": [sys.executable, str(PROGRAM), "--record", "{session_path}/calls.jsonl",
                    "--ref", "{exp_ref}", "--subject", "{subject}", "--rig", "{rig}", "--date", "{date}",
                    *(extra_args or [])],
            "env": {"CAMERA": "left"}, "stop": {"signal": "SIGINT", "grace": 5}, **command}
    config = parse_rig_config({"name": "acq", "uris": ["udp://127.0.0.1:0"], "data_dir": "data",
                               "drivers": {"commands": {"acquisition": body}}}, TRANSPORTS, "rig.yaml", tmp_path)
    return RigService.from_config(config)


async def begin(svc: RigService, ref: str = REF) -> Path:
    """EXPINIT + EXPSTART, then wait until the program has set itself up (its first record)."""
    await svc.start()
    await svc.handle(M.EXPINIT, [{"exp_ref": ref}], "t")
    await svc.handle(M.EXPSTART, [ref], "t")
    assert svc.session_dir is not None
    await wait_until(lambda: records(svc.session_dir / "calls.jsonl"), 15, "the program's first record")  # type: ignore[operator]
    return svc.session_dir


def test_program_gets_placeholders_env_and_cwd_and_is_stopped_with_its_signal(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = rig(tmp_path)
        folder = await begin(svc)
        calls = folder / "calls.jsonl"
        started = records(calls)
        health = svc.state.get(["drivers", "acquisition"])
        reply = await svc.handle(M.EXPEND, [], "t")
        await svc.close()
        return folder, started, health, records(calls), reply

    folder, started, health, calls, reply = run(main())
    first = started[0]
    assert first["event"] == "started"
    assert first["argv"][2:] == ["--ref", REF, "--subject", "KS001", "--rig", "acq", "--date", "2026-11-30"]
    assert first["argv"][1] == str(folder / "calls.jsonl")
    assert Path(first["cwd"]) == tmp_path  # cwd defaults to the rig file's folder
    assert first["env"] == {"CAMERA": "left", "RIGDECK_EXP_REF": REF, "RIGDECK_SESSION_PATH": str(folder),
                            "RIGDECK_SUBJECT": "KS001", "RIGDECK_RIG": "acq", "RIGDECK_DATE": "2026-11-30"}
    assert health["alive"] is True and health["pid"] == first["pid"] and health["last_error"] is None
    assert [c["event"] for c in calls] == ["started", "stopped"] and calls[1]["signal"] == "SIGINT"
    program = reply[0]["programs"]["acquisition"]
    assert program["exit_code"] == 0 and program["ended_by"] == "SIGINT" and "errors" not in reply[0]
    log = (folder / "acquisition.log").read_text()
    assert "acquisition started pid" in log and "stopping on SIGINT" in log


def test_a_program_that_ignores_its_stop_signal_gets_sigterm_after_the_grace(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = rig(tmp_path, ["--ignore-stop"], stop={"signal": "SIGINT", "grace": 0.5})
        folder = await begin(svc)
        reply = await svc.handle(M.EXPEND, [], "t")
        await svc.close()
        return records(folder / "calls.jsonl"), reply[0]["programs"]["acquisition"]

    calls, program = run(main())
    assert [(c["event"], c.get("signal")) for c in calls] == [("started", None), ("ignored", "SIGINT"),
                                                              ("stopped", "SIGTERM")]
    assert program["ended_by"] == "terminate"


def test_expstart_waits_for_the_ready_line_and_a_missing_one_is_an_error_reply(tmp_path: Path) -> None:
    async def main() -> tuple:
        ready = rig(tmp_path / "a", ["--ready-after", "0.3"], ready="camera ready", ready_timeout=20)
        folder = await begin(ready)
        said_ready = "camera ready" in (folder / "acquisition.log").read_text()
        await ready.close()
        late = rig(tmp_path / "b", ["--ready-after", "30"], ready="camera ready", ready_timeout=0.5)
        await late.start()
        await late.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        with pytest.raises(ServiceError) as info:
            await late.handle(M.EXPSTART, [REF], "t")
        status = late.status
        calls = records(late.session_dir / "calls.jsonl")  # type: ignore[operator]
        await late.close()
        return said_ready, str(info.value), status, calls

    said_ready, error, status, calls = run(main())
    assert said_ready
    assert "printed no line matching 'camera ready' within 0.5 s" in error and "acquisition started" in error
    assert status.name == "INITIALIZED"
    assert calls[-1]["event"] == "stopped"  # the program that never got ready was not left running


def test_a_crash_mid_session_is_an_error_status_and_the_rig_keeps_answering(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = rig(tmp_path, ["--crash-after", "0.3"])
        await begin(svc)
        await wait_until(lambda: svc.fault, 15, "the fault")
        with pytest.raises(DriverFault) as status_error:
            await svc.handle(M.EXPSTATUS, [20], "t")
        health = svc.state.get(["drivers", "acquisition"])
        info = await svc.handle(M.EXPINFO, [0, {}], "t")  # still serving
        reply = await svc.handle(M.EXPEND, [], "t")
        after = await svc.handle(M.EXPSTATUS, [30], "t")
        await svc.close()
        return str(status_error.value), health, info, reply, after, svc.state.get(["fault"])

    error, health, info, reply, after, fault = run(main())
    assert "driver acquisition failed: program acquisition ended mid-session (exit code 3" in error
    assert "fatal: camera disconnected" in error and "RUNNING" in error
    assert health["alive"] is False and "exit code 3" in health["last_error"] and health["exit_code"] == 3
    assert info[0] == 20 and "exit code 3" in info[1]["fault"]  # EXPINFO says it too
    assert reply[0]["programs"]["acquisition"]["ended_by"] == "exited"
    assert "exit code 3" in reply[0]["errors"]["acquisition"]
    assert after == [30] and fault is None  # the stop acknowledged it


def test_expinit_programs_start_at_expinit_and_stop_at_cleanup_and_close_leaves_nothing(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = rig(tmp_path, start_on="EXPINIT")
        await svc.start()
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        calls = svc.session_dir / "calls.jsonl"  # type: ignore[operator]
        at_init = await wait_until(lambda: records(calls), 15, "the program's first record")
        await svc.handle(M.EXPCLEANUP, [], "t")
        after_cleanup = records(calls)
        await begin(svc, "2026-11-30_2_KS001")
        pid = svc.commands["acquisition"].process.pid  # type: ignore[union-attr]
        await svc.close()  # the rig closing mid-session stops its programs too
        return at_init, after_cleanup, pid

    at_init, after_cleanup, pid = run(main())
    assert [c["event"] for c in at_init] == ["started"]
    assert [c["event"] for c in after_cleanup] == ["started", "stopped"]
    assert not pid_alive(pid)


def test_a_program_that_cannot_start_is_an_error_reply(tmp_path: Path) -> None:
    async def main() -> tuple:
        config = parse_rig_config({"name": "acq", "uris": ["udp://127.0.0.1:0"], "data_dir": "d", "drivers": {
            "commands": {"grab": {"run": ["./no-such-program", "{exp_ref}"]}}}}, TRANSPORTS, "rig.yaml", tmp_path)
        svc = RigService.from_config(config)
        await svc.start()
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        with pytest.raises(ServiceError) as info:
            await svc.handle(M.EXPSTART, [REF], "t")
        health = svc.state.get(["drivers", "grab"])
        await svc.close()
        return str(info.value), health

    error, health = run(main())
    assert "could not start program grab" in error and "no-such-program" in error
    assert health["alive"] is False and "no-such-program" in health["last_error"]


@pytest.mark.parametrize("command, match", [
    ({"run": "acquire --out x"}, "drivers.commands.acq: run must be a list"),
    ({"run": ["a", "{session}"]}, r"run\[1\]: unknown placeholder\(s\) \['session'\]"),
    ({"run": ["a"], "restart": True}, r"drivers.commands.acq: unknown key\(s\) \['restart'\]"),
    ({"run": ["a"], "stop": {"signal": "SIGSTOP"}}, "stop.signal must be one of"),
    ({"run": ["a"], "start_on": "EXPEND"}, "start_on must be one of"),
    ({"run": ["a"], "ready": "("}, "ready: bad regular expression"),
])
def test_bad_command_entries_name_the_file_and_the_key(command: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_rig_config({"name": "r", "uris": ["udp://127.0.0.1:1"], "drivers": {"commands": {"acq": command}}},
                         TRANSPORTS, "lab.yaml")
    assert str(info.value).startswith("lab.yaml: ")


def test_driver_names_are_shared_between_sections() -> None:
    with pytest.raises(ConfigError, match="'left' is used twice"):
        parse_rig_config({"name": "r", "uris": ["udp://127.0.0.1:1"], "drivers": {
            "recorders": {"left": {"kind": "camera"}}, "commands": {"left": {"run": ["a"]}}}}, TRANSPORTS, "lab.yaml")


def test_what_a_shell_program_started_ends_with_it(tmp_path: Path) -> None:
    """A shell that exits while its background child still runs: the child does not outlive the program."""
    script = f'"{sys.executable}" -c "import time; time.sleep(60)" & echo child $!; exit 4'

    async def main() -> tuple:
        config = parse_rig_config({"name": "acq", "uris": ["udp://127.0.0.1:0"], "data_dir": "d", "drivers": {
            "commands": {"wrapper": {"run": ["sh", "-c", script]}}}}, TRANSPORTS, "rig.yaml", tmp_path)
        svc = RigService.from_config(config)
        await begin_without_record(svc)
        await wait_until(lambda: svc.fault, 15, "the wrapper's exit")
        health = svc.state.get(["drivers", "wrapper"])
        await svc.close()
        return health

    health = run(main())
    child = int(next(line.split()[1] for line in health["last_lines"] if line.startswith("child ")))
    assert health["exit_code"] == 4
    assert not pid_alive(child)


async def begin_without_record(svc: RigService) -> None:
    await svc.start()
    await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
    await svc.handle(M.EXPSTART, [REF], "t")
