"""Real rig service processes for integration tests: ``rigdeck serve`` subprocesses on loopback, port 0.

Usage::

    from tests.integration.rigprocs import rig_processes

    with rig_processes(tmp_path, {
        "sync": {"main_sync": True, "drivers": {"recorders": {"nidq": {"kind": "ephys", "rate": 500}}}},
        "cams": {"drivers": {"recorders": {"left": {"kind": "camera", "rate": 50}}}},
        "bad":  {"fail_on": ["EXPSTART"]},
        "slow": {"delay_on": {"EXPINIT": 2.0}},
        "arm":  {"uris": ["sio://127.0.0.1:0"], "role": "manipulator",
                 "drivers": {"manipulator": {"ids": ["1"]}}},
    }) as rigs:
        rigs.rigs_file            # Path of a remote_rigs.yaml (extended form) pointing at every rig
        rigs.uri("cams")          # the rig's first bound URI, e.g. "udp://127.0.0.1:40123"
        rigs.uris["cams"]         # every bound URI of that rig, in rig-file order
        rigs.specs["cams"]        # core.config.RigSpec for it (make_link(spec) gives the RigLink)
        rigs.data_dir("cams")     # its data directory (<tmp>/rigs/<name>: each rig is its own "PC")
        rigs.session_dir("cams", "2026-11-23_1_S1")   # where that rig filed a session
        rigs.recordings("cams", exp_ref)              # {path: (frames, info)} of its .rdrec files
        rigs.kill("cams")         # SIGKILL (a crash: no clean shutdown)
        rigs.stop("cams")         # SIGTERM, wait: clean shutdown (files closed); returns the exit code
        rigs.restart("cams")      # a new process of a stopped/killed rig, on the addresses it had
        rigs.procs["cams"]        # app.demo_rigs.RigProcess (pid, alive(), lines, stopped_cleanly)
    # on exit every rig still running is stopped (SIGTERM, then SIGKILL after 10 s)

Each value is a rig.yaml body without ``name`` (see resources/rig_example.yaml); ``uris`` defaults to
``["udp://127.0.0.1:0"]``. The extra key ``role`` (main_sync | aux | manipulator) only goes into the
rigs file; without it a rig with ``main_sync: true`` is listed as role main_sync. ``rigs_options``
adds per-rig options to the rigs file entry (e.g. ``{"cams": {"timeout": 1.0}}``). Set
``shared_data_dir=True`` to file every rig's sessions in one ``<tmp>/data`` folder instead.
Rig stderr logs are in ``<tmp>/rigprocs/<name>.log``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from app.demo_rigs import RigProcess, start_rig_processes
from core.config import RigSpec, load_rigs, parse_rig
from core.drivers.recorder import SUFFIX, read_recording
from core.paths import session_folder
from transports.registry import TRANSPORTS


class RigCluster:
    """The running rigs of one :func:`rig_processes` block (see the module docstring)."""

    def __init__(self, procs: dict[str, RigProcess], rigs_file: Path, data_dirs: dict[str, Path],
                 bodies: dict[str, dict[str, Any]] | None = None) -> None:
        self.procs = procs
        self.bodies = dict(bodies or {})
        self.rigs_file = rigs_file
        self._data_dirs = data_dirs
        self.uris = {name: list(proc.uris) for name, proc in procs.items()}
        self.specs: dict[str, RigSpec] = load_rigs(rigs_file, TRANSPORTS)

    def uri(self, name: str) -> str:
        return self.uris[name][0]

    def data_dir(self, name: str) -> Path:
        return self._data_dirs[name]

    def session_dir(self, name: str, exp_ref: Any) -> Path:
        return session_folder(self._data_dirs[name], exp_ref)

    def recordings(self, name: str, exp_ref: Any) -> dict[Path, tuple[list, dict]]:
        folder = self.session_dir(name, exp_ref)
        return {path: read_recording(path) for path in sorted(folder.rglob(f"*{SUFFIX}"))}

    def entries(self, names: list[str], roles: bool = True,
                options: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Rigs-file entries for a subset of the running rigs.

        ``roles=False`` lists every rig as ``aux``, so the rigs themselves must settle main sync (the
        conflict tests need that); ``options`` adds per-rig keys such as ``timeout``.
        """
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            entry: dict[str, Any] = {"uri": self.uri(name)}
            role = self.specs[name].role.value
            if roles and role != "aux":
                entry["role"] = role
            entry.update((options or {}).get(name, {}))
            out[name] = entry
        return out

    def rigs_file_for(self, names: list[str], path: Path, **kwargs: Any) -> Path:
        """Write a rigs file with :meth:`entries` and return its path (for ``rigdeck run --rigs``)."""
        path.write_text(yaml.safe_dump(self.entries(names, **kwargs), sort_keys=False), encoding="utf-8")
        return path

    def specs_for(self, names: list[str], **kwargs: Any) -> dict[str, RigSpec]:
        """RigSpecs for :meth:`entries` (for an in-process :class:`core.session.Session`)."""
        return {name: parse_rig(name, entry, TRANSPORTS) for name, entry in self.entries(names, **kwargs).items()}

    def recorder_names(self, name: str) -> set[str]:
        """The recorders the rig file of ``name`` configures (one .rdrec file each per session)."""
        return set((self.bodies.get(name, {}).get("drivers") or {}).get("recorders") or {})

    def kill(self, name: str) -> int | None:
        return self.procs[name].kill()

    def stop(self, name: str) -> int | None:
        return self.procs[name].stop()

    def restart(self, name: str, timeout: float = 30.0) -> RigProcess:
        """Start ``name`` again (after kill/stop) on the very URIs it had, as a rebooted rig PC would."""
        old = self.procs[name]
        if old.alive():
            raise RuntimeError(f"rig {name} is still running (pid {old.pid})")
        body = yaml.safe_load(old.rig_file.read_text(encoding="utf-8"))
        body["uris"] = list(self.uris[name])
        rig_file = old.rig_file.with_name(f"{name}.restart.rig.yaml")
        rig_file.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
        proc = RigProcess(name, rig_file, self._data_dirs[name], old.log_path)
        try:
            proc.wait_ready(timeout)
        except BaseException:
            proc.kill()
            raise
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@contextlib.contextmanager
def rig_processes(
    tmp_path: Path,
    rigs: dict[str, dict[str, Any]],
    rigs_options: dict[str, dict[str, Any]] | None = None,
    shared_data_dir: bool = False,
    timeout: float = 30.0,
) -> Iterator[RigCluster]:
    """Start one ``rigdeck serve`` per entry of ``rigs``, wait until each is SERVING, stop them on exit."""
    base = Path(tmp_path)
    conf_dir = base / "rigprocs"
    conf_dir.mkdir(parents=True, exist_ok=True)
    rig_files: dict[str, Path] = {}
    data_dirs: dict[str, Path] = {}
    roles: dict[str, str] = {}
    for name, body in rigs.items():
        body = dict(body)
        role = body.pop("role", None) or ("main_sync" if body.get("main_sync") else "aux")
        roles[name] = role
        body.setdefault("uris", ["udp://127.0.0.1:0"])
        rig_file = conf_dir / f"{name}.rig.yaml"
        rig_file.write_text(yaml.safe_dump({"name": name, **body}, sort_keys=False), encoding="utf-8")
        rig_files[name] = rig_file
        data_dirs[name] = base / "data" if shared_data_dir else base / "rigs" / name
    procs = start_rig_processes(rig_files, dict(data_dirs), log_dir=conf_dir, timeout=timeout)
    try:
        entries: dict[str, Any] = {}
        for name, proc in procs.items():
            entry: dict[str, Any] = {"uri": proc.uris[0]}
            if roles[name] != "aux":
                entry["role"] = roles[name]
            entry.update((rigs_options or {}).get(name, {}))
            entries[name] = entry
        rigs_file = base / "remote_rigs.yaml"
        rigs_file.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
        yield RigCluster(procs, rigs_file, data_dirs, rigs)
    finally:
        for proc in procs.values():
            proc.stop()
