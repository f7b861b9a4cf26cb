"""Every driver's health in the rig's live state, and plugin kinds that cannot be used."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.config import ConfigError
from core.drivers.manipulator import SimulatedManipulator
from core.drivers.readiness import check_drivers
from core.protocol import ExpMessage as M
from core.rig_config import parse_rig_config
from core.service import RigService
from transports.registry import TRANSPORTS


def run(coro: Any, timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


class StageSwitchedOff(SimulatedManipulator):
    """Hardware that does not answer (the only stand-in these tests use: a stage is hardware)."""

    async def list_ids(self) -> list[str]:
        raise ConnectionError("no reply from the controller on COM3")


def test_recorders_and_the_manipulator_report_alive_activity_and_errors(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = RigService("r", data_dir=tmp_path, manipulator=SimulatedManipulator(ids=["1"]))
        config = parse_rig_config({"name": "r", "uris": ["udp://127.0.0.1:0"],
                                   "drivers": {"recorders": {"cam": {"kind": "camera", "rate": 100}}}},
                                  TRANSPORTS, "rig.yaml")
        cams = RigService.from_config(config.with_data_dir(tmp_path))
        await svc.start()
        await cams.start()
        idle = dict(cams.state.get(["drivers", "cam"]))
        await cams.handle(M.EXPINIT, [{"exp_ref": "2026-11-30_1_S1"}], "t")
        await cams.handle(M.EXPSTART, ["2026-11-30_1_S1"], "t")
        async with asyncio.timeout(10):
            while not (cams.state.get(["drivers", "cam", "frames"]) or 0) > 5:
                await asyncio.sleep(0.02)
        recording = dict(cams.state.get(["drivers", "cam"]))
        await cams.handle(M.EXPEND, [], "t")
        stopped = dict(cams.state.get(["drivers", "cam"]))
        stage = dict(svc.state.get(["drivers", "manipulator"]))
        await svc.close()
        await cams.close()
        return idle, recording, stopped, stage

    idle, recording, stopped, stage = run(main())
    assert idle == {"alive": False, "last_activity": None, "last_error": None, "type": "recorder",
                    "kind": "camera", "frames": 0}
    assert recording["alive"] is True and recording["last_activity"] is not None and recording["last_error"] is None
    assert stopped["alive"] is False and stopped["frames"] >= recording["frames"]
    assert stage["alive"] is True and stage["last_error"] is None and stage["type"] == "manipulator"


def test_a_stage_that_does_not_answer_is_a_health_error_not_a_dead_rig(tmp_path: Path) -> None:
    async def main() -> tuple:
        svc = RigService("r", data_dir=tmp_path, manipulator=StageSwitchedOff(ids=["1"]))
        await svc.start()  # does not raise: the rig serves without its stage
        status = await svc.handle(M.EXPSTATUS, [0], "t")
        health = svc.state.get(["drivers", "manipulator"])
        await svc.close()
        return status, health

    status, health = run(main())
    assert status == [0]
    assert health["alive"] is False and "no reply from the controller on COM3" in health["last_error"]


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed plugin (a dist-info with its entry point on sys.path) whose module fails to import."""
    site = tmp_path / "site"
    (site / "broken_laser-0.1.dist-info").mkdir(parents=True)
    (site / "broken_laser-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-laser\n"
                                                                   "Version: 0.1\n")
    (site / "broken_laser-0.1.dist-info" / "entry_points.txt").write_text(
        "[rigdeck.drivers]\nbroken-laser = broken_laser:Laser\n")
    (site / "broken_laser.py").write_text("import serial_port_library_that_is_missing\n")
    monkeypatch.syspath_prepend(str(site))
    return "broken-laser"


def test_a_plugin_that_cannot_be_imported_fails_the_file_and_check_reports_it(broken_plugin: str) -> None:
    body = {"name": "r", "uris": ["udp://127.0.0.1:1"], "drivers": {"recorders": {
        "laser": {"kind": broken_plugin, "power_mw": 3}, "cam": {"kind": "camera"}}}}
    with pytest.raises(ConfigError) as info:
        parse_rig_config(body, TRANSPORTS, "lab.yaml")
    lenient = parse_rig_config(body, TRANSPORTS, "lab.yaml", strict=False)
    verdicts = {v.name: v for v in run(check_drivers(lenient))}
    text = str(info.value)
    assert text.startswith("lab.yaml: drivers.recorders.laser: kind 'broken-laser': plugin broken-laser 0.1")
    assert "cannot be imported: ModuleNotFoundError" in text and "serial_port_library_that_is_missing" in text
    assert not verdicts["laser"].ready and "cannot be imported" in (verdicts["laser"].problem or "")
    assert verdicts["cam"].ready
