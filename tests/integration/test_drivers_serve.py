"""Drivers in real ``rigdeck serve`` processes: a pip-installed plugin kind, external programs, ``--check``.

The example plugin (resources/example_driver) is installed the way a lab would install theirs: ``pip
install`` (into a folder put on the rig's PYTHONPATH, so the shared test environment stays untouched);
RigDeck then finds its kind through the ``rigdeck.drivers`` entry point alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e import ROOT
from helpers import run, wait_until
from rigprocs import RigCluster, rig_processes

from app.rigset import RigSet
from core.link import RemoteError
from core.protocol import ExpMessage as M

PLUGIN_SRC = ROOT / "resources" / "example_driver"
PROGRAM = ROOT / "tests" / "programs" / "fake_acquisition.py"
REF = "2026-11-30_1_KS001"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` the example plugin into a folder of its own; returns that folder (a sys.path entry)."""
    base = tmp_path_factory.mktemp("plugin")
    src, target = base / "src", base / "site"
    shutil.copytree(PLUGIN_SRC, src)  # pip builds in the source tree: keep resources/ clean
    # offline when this environment can build a wheel itself (setuptools >= 70.1, or setuptools + wheel);
    # otherwise pip fetches the build backend the plugin's pyproject names, as any user's pip would
    can_build = importlib.util.find_spec("setuptools") and (
        importlib.util.find_spec("wheel") or importlib.util.find_spec("setuptools.command.bdist_wheel"))
    offline = ["--no-build-isolation", "--no-index"] if can_build else []
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *offline,
                           "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(target.glob("rigdeck_example_driver-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def with_plugin(plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Rig processes started in this test see the installed plugin."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")])))
    yield plugin_path


def serve(*args: str, env_path: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(env_path or ""), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "app.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def write_rig(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"name": "lab", "uris": ["udp://127.0.0.1:0"], **body}), encoding="utf-8")
    return path


async def session(cluster: RigCluster, name: str, during: Any = None) -> tuple[list[Any], Any]:
    rigset = RigSet({name: cluster.specs[name]})
    link = (await rigset.open())[name]
    try:
        await link.request(M.EXPINIT, {"exp_ref": REF}, timeout=10)
        await link.request(M.EXPSTART, REF, {}, timeout=20)
        seen = await during(link) if during is not None else None
        return await link.request(M.EXPEND, {}, timeout=20), seen
    finally:
        await rigset.close()


def test_a_plugin_kind_runs_a_whole_session_in_a_real_rig(tmp_path: Path, with_plugin: Path) -> None:
    rigs = {"lab": {"drivers": {"recorders": {"laser": {"kind": "example-laser", "pulse_hz": 50, "power_mw": 2}}}}}
    with rig_processes(tmp_path, rigs) as cluster:
        pulses = cluster.session_dir("lab", REF) / "raw_laser_data" / "laser.pulses.csv"

        async def some_pulses(link: Any) -> int:
            return await wait_until(lambda: pulses.exists() and len(pulses.read_text().splitlines()) > 10, 15,
                                    "laser pulses in the session folder")

        reply, _ = run(session(cluster, "lab", some_pulses))
        assert cluster.stop("lab") == 0
    rows = pulses.read_text().splitlines()
    assert rows[0] == "pulse,wall_time,power_mw" and all(r.endswith(",2") for r in rows[1:])
    assert reply[0]["status"] == 30 and reply[0]["recorders"]["laser"]["frames"] == len(rows) - 1


def test_a_plugins_unknown_key_is_refused_naming_the_file_and_the_key(tmp_path: Path, plugin_path: Path) -> None:
    rig = write_rig(tmp_path / "rig.yaml", {"drivers": {"recorders": {
        "laser": {"kind": "example-laser", "power": 2}}}})
    for args in ([str(rig)], ["--check", str(rig)]):
        done = serve(*args, env_path=plugin_path)
        assert done.returncode == 2, done
        assert f"{rig}: drivers.recorders.laser: unknown key(s) ['power'] for kind 'example-laser'" in done.stderr
        assert "allowed: ['kind', 'port', 'power_mw', 'pulse_hz']" in done.stderr


def test_check_reports_each_driver_and_exits_0_only_when_all_are_ready(tmp_path: Path, plugin_path: Path) -> None:
    drivers: dict[str, Any] = {
        "recorders": {"test": {"kind": "video", "source": "lavfi:testsrc=size=160x120:rate=10"},
                      "laser": {"kind": "example-laser"},
                      "nidq": {"kind": "ephys"}},
        "commands": {"acquisition": {"run": [sys.executable, str(PROGRAM), "--record", "x"]}},
    }
    good = serve("--check", str(write_rig(tmp_path / "good.yaml", {"drivers": drivers})), env_path=plugin_path)
    drivers["recorders"]["cam"] = {"kind": "video", "source": "v4l2:/dev/no-such-camera"}
    drivers["recorders"]["laser"]["port"] = str(tmp_path / "no-such-controller")
    drivers["commands"]["grab"] = {"run": ["no-such-grabber", "{exp_ref}"]}
    bad = serve("--check", str(write_rig(tmp_path / "bad.yaml", {"drivers": drivers})), env_path=plugin_path)
    missing = serve("--check", str(tmp_path / "bad.yaml"))  # the plugin is not installed for this one

    assert good.returncode == 0, good
    assert good.stdout.splitlines()[-1] == "READY lab"
    assert "ok        laser        recorder example-laser: plugin rigdeck-example-driver 0.1.0" in good.stdout
    assert bad.returncode == 1, bad
    lines = {line.split()[1 if line.split()[0] == "ok" else 2]: line
             for line in bad.stdout.splitlines() if line.startswith("  ")}
    assert lines["test"].lstrip().startswith("ok") and lines["nidq"].lstrip().startswith("ok")
    assert lines["acquisition"].lstrip().startswith("ok")
    assert "NOT READY cam" in lines["cam"] and "cannot open v4l2:/dev/no-such-camera" in lines["cam"]
    assert "NOT READY laser" in lines["laser"] and "no-such-controller not found" in lines["laser"]
    assert "program 'no-such-grabber' not found or not executable (on PATH)" in lines["grab"]
    assert bad.stdout.splitlines()[-1] == "NOT READY lab: cam, laser, grab"
    assert missing.returncode == 2 and "kind must be one of" in missing.stderr and "'example-laser'" in missing.stderr


def test_a_program_crash_mid_session_is_an_error_status_and_the_rig_keeps_answering(tmp_path: Path) -> None:
    command = {"run": [sys.executable, str(PROGRAM), "--record", "{session_path}/calls.jsonl", "--crash-after", "0.5"]}
    rigs = {"lab": {"drivers": {"commands": {"acquisition": command},
                                "recorders": {"left": {"kind": "camera", "rate": 30}}}}}
    with rig_processes(tmp_path, rigs) as cluster:

        async def crash_seen(link: Any) -> tuple[str, list[Any]]:
            async def status_error() -> str | None:
                try:
                    await link.request(M.EXPSTATUS, 20, timeout=5)
                except RemoteError as ex:
                    return str(ex)
                return None

            async def poll() -> str:
                while (text := await status_error()) is None:
                    pass
                return text

            text = await poll()
            info = await link.request(M.EXPINFO, 20, {}, timeout=5)  # the rig still answers
            return text, info

        reply, (error, info) = run(session(cluster, "lab", crash_seen))
        alive = cluster.procs["lab"].alive()
        assert cluster.stop("lab") == 0
    assert "DriverFault" in error and "program acquisition ended mid-session (exit code 3" in error
    assert "fatal: camera disconnected" in error
    assert info[0] == 20 and alive
    assert reply[0]["status"] == 30 and "exit code 3" in reply[0]["errors"]["acquisition"]
    assert reply[0]["recorders"]["left"]["frames"] > 0  # the other drivers kept recording


def test_the_consoles_rig_monitor_sees_a_program_crash_as_a_rig_error_on_polled_and_pushing_rigs(
        tmp_path: Path) -> None:
    """udp:// rigs are polled (EXPSTATUS answers the fault), zmq:// rigs push their state (``fault`` and
    ``last_error`` change): either way the console's monitor opens a rig_error incident in plain words."""
    command = {"run": [sys.executable, str(PROGRAM), "--record", "{session_path}/calls.jsonl", "--crash-after", "0.3"]}
    rigs = {"polled": {"drivers": {"commands": {"acquisition": command}}},
            "pushing": {"uris": ["zmq://127.0.0.1:0"], "drivers": {"commands": {"acquisition": command}}}}
    with rig_processes(tmp_path, rigs) as cluster:

        async def main() -> dict[str, str]:
            rigset = RigSet(cluster.specs, poll_interval=0.2)
            incidents: dict[str, str] = {}
            rigset.prepare().on_incident(
                lambda i: incidents.setdefault(i.rig, i.detail or "") if i.kind == "rig_error" else None)
            links = await rigset.open()
            try:
                for link in links.values():
                    await link.request(M.EXPINIT, {"exp_ref": REF}, timeout=10)
                    await link.request(M.EXPSTART, REF, {}, timeout=20)
                await wait_until(lambda: len(incidents) == 2, 20, "a rig_error incident from each rig")
                for link in links.values():
                    await link.request(M.EXPEND, {}, timeout=20)
                return incidents
            finally:
                await rigset.close()

        incidents = run(main())
    for rig in ("polled", "pushing"):
        assert "driver acquisition failed: program acquisition ended mid-session (exit code 3" in incidents[rig]
        assert "fatal: camera disconnected" in incidents[rig]


def test_a_rig_stopped_mid_session_stops_its_programs_first(tmp_path: Path) -> None:
    command = {"run": [sys.executable, str(PROGRAM), "--record", "{session_path}/calls.jsonl"],
               "stop": {"signal": "SIGINT", "grace": 5}}
    with rig_processes(tmp_path, {"lab": {"drivers": {"commands": {"acquisition": command}}}}) as cluster:
        calls = cluster.session_dir("lab", REF) / "calls.jsonl"

        async def begin() -> None:
            rigset = RigSet({"lab": cluster.specs["lab"]})
            link = (await rigset.open())["lab"]
            try:
                await link.request(M.EXPINIT, {"exp_ref": REF}, timeout=10)
                await link.request(M.EXPSTART, REF, {}, timeout=20)
                await wait_until(calls.exists, 15, "the program's first record")
            finally:
                await rigset.close()

        run(begin())
        code = cluster.stop("lab")  # SIGTERM to rigdeck serve, as a service manager would send
    events = [json.loads(line) for line in calls.read_text().splitlines()]
    assert code == 0 and [e["event"] for e in events] == ["started", "stopped"] and events[1]["signal"] == "SIGINT"
    with pytest.raises(ProcessLookupError):
        os.kill(events[0]["pid"], 0)
