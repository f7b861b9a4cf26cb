"""``rigdeck serve RIG.yaml``: run one rig service (an acquisition PC) on every URI of its rig file.

Machine-readable output on stdout, one line each, flushed (the demo launcher and the integration
tests read them)::

    READY <rig> <scheme>://<host>:<port>[/path]     once per bound URI (the real port when 0 was asked)
    NOTIFIER <rig> <name> <host>:<port>             after an rpc:// READY: its sync_struct notifier
                                                    (rigdeck watch HOST PORT NAME; port+1 when free)
    SERVING <rig> <n>                               all n URIs are bound; the rig takes messages
    STOPPED <rig>                                   after a clean shutdown (recorders closed)

SIGINT / SIGTERM stop it cleanly: servers close, programs are stopped, recorders close their files.
With ``--launcher-pid PID`` (what launchers of rig processes pass, holding the rig's stdin open) the rig
stops the same way when that launcher dies, even by SIGKILL (:func:`app.process_limits.exit_with_launcher`).
At start-up the soft open-file limit is raised to the hard limit, and event-loop errors (a failed
``accept()`` when descriptors run out) are logged as rate-limited lines, never one traceback each.
A bad rig file, an unknown transport or a port in use is one line on stderr and exit code 2; so is a URI
beyond loopback with no access control (allow, token, CURVE keys) unless it says ``open: true``, which
start-up then warns about loudly (:func:`core.transport_spec.binding_problem`). An ``ephys_link``
manipulator proxy connects before anything is bound: an absent server is one line, too.

``rigdeck serve --check RIG.yaml`` validates the file and checks each driver's readiness without
starting anything (no port is bound, no session folder is made): a program is found and executable,
a camera source opens (a short ffmpeg probe), a plugin imports and passes its own check. One line per
driver, ``ok`` or ``NOT READY`` with the reason; exit code 0 only when every driver is ready, 1 when
one is not, 2 when the file itself is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from app.process_limits import exit_with_launcher, limit_loop_errors, raise_open_file_limit, reuse_freed_memory
from core.config import ConfigError
from core.drivers.manipulator import Manipulator
from core.drivers.readiness import check_drivers
from core.protocol import parse_uri
from core.rig_config import RigConfig, load_rig_config
from core.service import RigService, build_manipulator
from core.transport_spec import open_warning
from transports.registry import TRANSPORTS, server_factory, transport
from transports.sio.client import SioUnavailable, sio_url
from transports.sio.descriptor import SIO
from transports.sio.proxy import EphysLinkManipulator

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_NOT_READY = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run a rig service from a rig file (rig.yaml)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rig_file", metavar="RIG.yaml", help="the rig file (see resources/rig_example.yaml)")
    parser.add_argument("--data-dir", help="where sessions are filed (overrides data_dir in the rig file)")
    parser.add_argument("--check", action="store_true",
                        help="validate the rig file and check each driver's readiness; start nothing")
    parser.add_argument("--launcher-pid", type=int, metavar="PID",
                        help="stop when this process (our parent, holding our stdin open) dies")
    parser.set_defaults(func=run)


def say(line: str) -> None:
    """One line on stdout; a reader that is gone (a launcher that died) must not stop the shutdown."""
    try:
        print(line, flush=True)
    except (BrokenPipeError, ValueError, OSError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (and the interpreter's last flush finds no pipe)


async def simulated_manipulator(spec: Mapping[str, Any], source: str) -> Manipulator:
    return build_manipulator(spec, source)


async def ephys_link_proxy(spec: Mapping[str, Any], source: str) -> Manipulator:
    """A proxy to the ephys-link server ``ephys_link`` names (``sio://host:port[/PINPOINT_ID]``), connected:
    the rig service asks it for its manipulators as it starts, so an absent server is one clear error."""
    where = f"{source}: drivers.manipulator.ephys_link"
    try:
        address = parse_uri(spec["ephys_link"], resolve_host=False, default_port=SIO.default_port, allow_path=True)
    except (TypeError, ValueError) as ex:
        raise ConfigError(f"{where}: {ex}") from None
    proxy = EphysLinkManipulator(sio_url(address.host, address.port, address.path or None))
    try:
        await proxy.client.connect()  # one attempt now: the server must be there when the rig starts
    except SioUnavailable as ex:
        await proxy.close()
        raise ConfigError(f"{where}: cannot reach {address}: {ex}") from None
    await proxy.start()  # and from now on it reconnects by itself after a loss
    return proxy


#: the manipulator driver each ``drivers.manipulator.type`` of a rig file builds (core.rig_config checks the
#: type is one of these names)
MANIPULATORS: dict[str, Callable[[Mapping[str, Any], str], Awaitable[Manipulator]]] = {
    "simulated": simulated_manipulator,
    "ephys_link": ephys_link_proxy,
}


async def make_manipulator(config: RigConfig) -> Manipulator | None:
    """The manipulator driver the rig file declares (``type``), or None when it has none."""
    spec = config.manipulator
    if spec is None:
        return None
    if spec.get("plugin"):  # a plugin's kind (core.drivers.kinds), built from its validated options
        return build_manipulator(spec, config.source, config.driver_context())
    try:
        build = MANIPULATORS[spec["type"]]
    except KeyError:
        raise ConfigError(f"{config.source}: drivers.manipulator.type {spec['type']!r}: no such driver; "
                          f"known: {sorted(MANIPULATORS)}") from None
    return await build(spec, config.source)


def on_stop_signals(stop: asyncio.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop`` (a clean shutdown); returns the function that removes the handlers."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass

    def remove() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return remove


async def serve(config: RigConfig, stop: asyncio.Event | None = None, launcher_pid: int | None = None) -> int:
    """Bind every URI, announce them, serve until ``stop`` is set (or a signal, or the launcher's death),
    then shut down cleanly."""
    limit_loop_errors()
    service = RigService.from_config(config, manipulator=await make_manipulator(config))
    stop = stop or asyncio.Event()
    remove_signal_handlers = on_stop_signals(stop)
    if launcher_pid:
        loop = asyncio.get_running_loop()
        exit_with_launcher(launcher_pid, lambda: loop.call_soon_threadsafe(stop.set))
    handles: list[Any] = []
    serving = False
    try:
        await service.start()
        for spec in config.listen:
            try:
                handle = await server_factory(spec.scheme)(spec.address, service, dict(spec.options))
            except OSError as ex:
                raise ConfigError(f"{config.source}: cannot listen on {spec.uri}: {ex.strerror or ex}") from None
            except ValueError as ex:
                raise ConfigError(f"{config.source}: {spec.uri}: {ex}") from None
            handles.append(handle)
            warning = open_warning(spec.address.host, spec.options, transport(spec.scheme))
            if warning:
                log.warning("%s", warning)
            # a handle may name its own URI (a manipulator server reached through a relay: .../PINPOINT_ID)
            bound = getattr(handle, "public_uri", None) or dataclasses.replace(spec.address, port=int(handle.port))
            say(f"READY {config.name} {bound}")
            notify_port = getattr(handle, "notify_port", None)  # rpc://: its live state over sync_struct
            if notify_port:
                where = dataclasses.replace(spec.address, port=int(notify_port)).netloc
                say(f"NOTIFIER {config.name} {handle.notifier_name} {where}")
        say(f"SERVING {config.name} {len(handles)}")
        serving = True
        await stop.wait()
        return 0
    finally:
        remove_signal_handlers()
        for handle in reversed(handles):
            try:
                await handle.close()
            except Exception:
                log.exception("closing a server of rig %s failed", config.name)
        await service.close()
        if serving:
            say(f"STOPPED {config.name}")


def check(rig_file: str) -> int:
    """``--check``: the file's validity and every driver's readiness, one line each (see the docstring)."""
    try:
        config = load_rig_config(rig_file, TRANSPORTS, strict=False)
    except ConfigError as ex:
        print(f"rigdeck: {ex}", file=sys.stderr, flush=True)
        say(f"INVALID {rig_file}")
        return EXIT_CONFIG
    verdicts = asyncio.run(check_drivers(config))
    say(f"rig {config.name} ({config.source}): file valid, {len(verdicts)} driver(s)")
    width = max((len(v.name) for v in verdicts), default=0)
    for v in verdicts:
        state = "ok" if v.ready else "NOT READY"
        words = v.problem if v.problem else v.detail
        say(f"  {state:<9} {v.name:<{width}}  {v.role} {v.kind}" + (f": {words}" if words else ""))
    missing = [v.name for v in verdicts if not v.ready]
    say(f"READY {config.name}" if not missing else f"NOT READY {config.name}: {', '.join(missing)}")
    return EXIT_NOT_READY if missing else 0


def run(args: argparse.Namespace) -> int:
    if args.check:
        return check(args.rig_file)
    config = load_rig_config(args.rig_file, TRANSPORTS).with_data_dir(args.data_dir)
    raise_open_file_limit()
    reuse_freed_memory()
    try:
        return asyncio.run(serve(config, launcher_pid=args.launcher_pid))
    except ConfigError as ex:
        print(f"rigdeck: {ex}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
