"""An example RigDeck driver plugin: a laser that pulses during a session and logs every pulse.

It is a *recorder* in RigDeck's terms (started at EXPSTART, stopped at EXPEND, writes into the session
folder), built from its rig-file options. Everything a plugin needs is here; ``docs/drivers.md`` says
what each method must guarantee. The "hardware" is simulated unless ``port`` names a device path, in
which case ``--check`` at least verifies that the device exists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from core.drivers.base import DriverContext
from core.drivers.recorder import Recorder, RecorderError

__all__ = ["LaserDriver"]


class LaserDriver(Recorder):
    """Pulses at ``pulse_hz`` while a session runs; ``<session>/raw_laser_data/<name>.pulses.csv`` logs them."""

    kind = "example-laser"
    collection = "raw_laser_data"
    #: every rig-file key this kind accepts (besides ``kind``); any other key is refused by RigDeck
    options = {
        "pulse_hz": "pulses per second (default 10)",
        "power_mw": "laser power in mW (0..100, default 5)",
        "port": "'simulated' (default) or the device path of the laser's controller",
    }

    def __init__(self, name: str, pulse_hz: float = 10.0, power_mw: float = 5.0, port: str = "simulated") -> None:
        super().__init__(name)
        self.pulse_hz, self.power_mw, self.port = pulse_hz, power_mw, port
        self._task: asyncio.Task[None] | None = None
        self._file: IO[str] | None = None

    # ------------------------------------------------------------------ configuration (classmethods)
    @classmethod
    def validate_options(cls, options: Mapping[str, Any], context: DriverContext) -> dict[str, Any]:
        out = {"pulse_hz": 10.0, "power_mw": 5.0, "port": "simulated", **options}
        for key, low, high in (("pulse_hz", 0.1, 1000), ("power_mw", 0, 100)):
            value = out[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{key} must be a number in {low:g}..{high:g}, not {value!r}")
        if not isinstance(out["port"], str):
            raise ValueError(f"port must be 'simulated' or a device path, not {out['port']!r}")
        return out

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], context: DriverContext) -> LaserDriver:
        return cls(name, float(options["pulse_hz"]), float(options["power_mw"]), str(options["port"]))

    @classmethod
    async def check(cls, options: Mapping[str, Any], context: DriverContext) -> str | None:
        port = str(options.get("port", "simulated"))
        if port != "simulated" and not Path(port).exists():
            return f"laser controller {port} not found"
        return None

    # ------------------------------------------------------------------ the recorder contract
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, session_dir: Path, exp_ref: str | None = None) -> Path:
        if self.running:
            raise RecorderError(f"laser {self.name} is already pulsing")
        folder = Path(session_dir) / self.collection
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{self.name}.pulses.csv"
        try:
            self._file = open(self.path, "x", encoding="ascii")  # noqa: SIM115 - closed in stop()
        except FileExistsError:
            raise RecorderError(f"laser {self.name}: {self.path} already exists") from None
        self._file.write("pulse,wall_time,power_mw\n")
        self._frames, self.error = 0, None
        self._pulse()  # the first pulse now: start() returns once the laser is really firing
        self._task = asyncio.create_task(self._run(), name=f"laser-{self.name}")
        return self.path

    def _pulse(self) -> None:
        assert self._file is not None
        self._file.write(f"{self._frames},{time.time():.6f},{self.power_mw:g}\n")
        self._file.flush()
        self._frames += 1
        self._notify()  # RigDeck's live state: frames and last activity

    async def _run(self) -> None:
        try:
            while True:
                await asyncio.sleep(1.0 / self.pulse_hz)
                self._pulse()
        except asyncio.CancelledError:
            raise
        except Exception as ex:  # a failing device: say so, in words, and stop pulsing
            self._fault(f"laser stopped pulsing: {type(ex).__name__}: {ex}")

    async def stop(self) -> dict[str, Any]:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._file is not None:
            self._file.close()
            self._file = None
        return {"path": str(self.path) if self.path else None, "frames": self.frames, "error": self.error}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pulse_hz": self.pulse_hz, "power_mw": self.power_mw}
