"""``rigdeck manipulators URI ACTION``: script and check manipulator servers (RigDeck or ephys-link 2.x).

URI: ``sio://host[:port]`` (port 3000 when omitted, as ephys-link), ``http://host:port`` (how
ephys-link prints itself) or a bare ``host[:port]``. ``sio://relayhost:port/PINPOINT_ID`` reaches a
manipulator server that connected out to a ``rigdeck relay``.

Actions::

    list                         manipulator ids
    info                         server, platform, ids, push or polling, control
    position [ID]                where one manipulator (or every one) is, in mm
    move ID X Y Z W --speed S    move (mm, mm/s) and wait; prints where it ended
    depth ID D --speed S         drive the depth axis only (allowed inside the brain)
    inside ID on|off             set the inside-brain lock (blocks 'move', not 'depth')
    stop ID                      halt one manipulator where it is
    stop-all                     halt every manipulator of the server at once
    watch                        print positions as they change (pushed by RigDeck, polled from ephys-link)

``--json`` prints one JSON object per line instead of text (an error also prints ``{"error": ...}``).
A token (when the server requires one) is read from ``$RIGDECK_SIO_TOKEN`` or ``--token-file``, never
from the command line, where other users could read it.

Exit codes: 0 done; 1 the server refused or failed the command (its ephys-link error text is printed,
one line, e.g. ``Cannot move manipulator while inside the brain. ...``), a reply timed out or the
connection was lost; 2 bad URI or arguments, or the server cannot be reached or refused the connection;
130 interrupted (Ctrl-C during ``move``/``depth`` stops that manipulator first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.drivers.manipulator import ManipulatorError, Vec4
from core.protocol import parse_uri
from transports.sio.client import (
    DEFAULT_POLL_HZ,
    DEFAULT_TIMEOUT,
    SioManipulatorClient,
    SioRemoteError,
    SioUnavailable,
    sio_url,
)
from transports.sio.wire import PINPOINT_ID

EXIT_REMOTE = 1
EXIT_USAGE = 2
TOKEN_ENV = "RIGDECK_SIO_TOKEN"
PROG = "rigdeck manipulators"
SIO_PORT = 3000
#: URI schemes naming a Socket.IO manipulator server (ephys-link prints http://)
URI_SCHEMES = ("sio", "http", "ws")


class UsageError(ValueError):
    """Bad URI, token file or arguments: exit 2 with this message."""


def manipulator_url(uri: str) -> str:
    """The Socket.IO URL for a manipulator URI (see the module docstring); raises UsageError saying why not.

    A path is a Pinpoint ID at a relay and goes into the query, where the relay reads it."""
    text = uri.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else "sio"
    if scheme not in URI_SCHEMES:
        raise UsageError(f"{uri!r} is not a manipulator server URI; expected sio://host[:port] "
                         f"(or http://host:port), not {scheme}://")
    rest = text.split("://", 1)[1] if "://" in text else text
    rest = rest.rstrip("/")
    if not rest:
        raise UsageError(f"bad manipulator URI {uri!r}: no host")
    text = f"sio://{rest}"
    try:
        address = parse_uri(text, resolve_host=False, default_port=SIO_PORT, default_scheme="sio", allow_path=True)
    except (ValueError, TypeError) as ex:
        raise UsageError(f"bad manipulator URI: {ex}") from None
    if address.path and not PINPOINT_ID.match(address.path):
        raise UsageError(f"bad manipulator URI {uri!r}: the path must be a Pinpoint ID "
                         "(3-32 letters, digits, - or _)")
    return sio_url(address.host, address.port, address.path or None)


def read_token(token_file: str | None) -> str | None:
    """The shared token from ``--token-file`` (first line) or ``$RIGDECK_SIO_TOKEN``; None when neither."""
    if token_file:
        try:
            lines = Path(token_file).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as ex:
            raise UsageError(f"cannot read token file {token_file}: {ex.strerror or ex}") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise UsageError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def one_line(text: Any) -> str:
    """Error texts may carry newlines (pydantic's); a script reads one line."""
    return " ".join(str(text).split()) or "error"


def finite(text: str) -> float:
    """argparse type: a finite number (ephys-link accepts NaN and reads it back as null; we refuse it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def positive(text: str) -> float:
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def on_off(text: str) -> bool:
    words = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}
    try:
        return words[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}") from None


class Output:
    """Text for people or one JSON object per line for scripts; flushed so pipes see each line at once."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def emit(self, data: dict[str, Any], text: str) -> None:
        print(json.dumps(data, separators=(",", ":")) if self.json else text, flush=True)

    def error(self, text: str, **extra: Any) -> None:
        line = one_line(text)
        if self.json:
            print(json.dumps({"error": line, **extra}, separators=(",", ":")), flush=True)
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def fmt_pos(pos: Vec4) -> str:
    return f"x={pos.x:.4f} y={pos.y:.4f} z={pos.z:.4f} w={pos.w:.4f}"


# --------------------------------------------------------------------------------------- actions

Action = Callable[[SioManipulatorClient, argparse.Namespace, Output], Awaitable[int]]


async def do_list(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    ids = await client.list_ids()
    out.emit({"manipulators": ids}, "\n".join(ids))
    return 0


async def do_info(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    version = await client.version()
    platform = await client.platform_info()
    ids = await client.list_ids()
    info = client.server_info
    server = "RigDeck" if info else "ephys-link"
    data: dict[str, Any] = {
        "server": server, "version": info.get("Version") if info else version, "api_version": version,
        "rig": info.get("Rig") if info else None,
        "platform": {"name": platform.name, "cli_name": platform.cli_name, "axes_count": platform.axes_count,
                     "dimensions": platform.dimensions.as_dict()},
        "manipulators": ids, "push": client.push, "push_hz": info.get("PushRate") if info else None,
        "controller": client.controller if info else None,
    }
    dims = " x ".join(f"{v:g}" for v in platform.dimensions.as_tuple())
    if info:
        server_text = f"RigDeck {data['version']} (ephys-link API {version}), rig {data['rig']}"
        updates = f"pushed at up to {data['push_hz']:g} Hz"
        control = "this client is the controller" if client.controller else "this client is an observer"
    else:
        server_text, updates = f"ephys-link {version}", f"polled (get_position, {1 / client.poll_interval:g} Hz)"
        control = "single client (ephys-link accepts one at a time)"
    text = "\n".join([
        f"server        {server_text}",
        f"platform      {platform.name} ({platform.cli_name}), {platform.axes_count} axes, {dims} mm",
        f"manipulators  {', '.join(ids) or '(none)'}",
        f"positions     {updates}",
        f"control       {control}",
    ])
    out.emit(data, text)
    return 0


async def do_position(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    if args.id is not None:
        pos = await client.position(args.id)
        out.emit({"id": args.id, "position": pos.as_dict()}, f"{args.id}  {fmt_pos(pos)}")
        return 0
    ids = await client.list_ids()
    positions = {i: await client.position(i) for i in ids}
    out.emit({"positions": {i: p.as_dict() for i, p in positions.items()}},
             "\n".join(f"{i}  {fmt_pos(p)}" for i, p in positions.items()))
    return 0


async def _control(client: SioManipulatorClient, args: argparse.Namespace) -> None:
    """RigDeck servers let one client move at a time; ``--take-control`` claims it (ephys-link: n/a)."""
    if getattr(args, "take_control", False) and client.server_info is not None and not client.controller:
        await client.take_control()


async def _stop_if_interrupted(client: SioManipulatorClient, manipulator_id: str, move: Awaitable[Any]) -> Any:
    """Await a move; if Ctrl-C cancels it, stop that manipulator before leaving (the server would
    otherwise finish a move nobody watches any more)."""
    try:
        return await move
    except asyncio.CancelledError:
        try:
            await client.stop(manipulator_id, timeout=1.0)
            said = f"interrupted: stopped manipulator {manipulator_id}"
        except Exception as ex:  # noqa: BLE001 - report it; the interruption goes on either way
            said = f"interrupted: could not stop manipulator {manipulator_id}: {one_line(ex)}"
        print(f"{PROG}: {said}", file=sys.stderr, flush=True)
        raise


async def do_move(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    await _control(client, args)
    target = Vec4(args.x, args.y, args.z, args.w)
    final = await _stop_if_interrupted(client, args.id, client.set_position(args.id, target, args.speed))
    out.emit({"id": args.id, "position": final.as_dict()}, f"{args.id}  {fmt_pos(final)}")
    return 0


async def do_depth(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    await _control(client, args)
    final = await _stop_if_interrupted(client, args.id, client.set_depth(args.id, args.depth, args.speed))
    out.emit({"id": args.id, "depth": final}, f"{args.id}  depth={final:.4f}")
    return 0


async def do_inside(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    await _control(client, args)
    state = await client.set_inside_brain(args.id, args.state)
    out.emit({"id": args.id, "inside": state}, f"{args.id}  inside brain: {'on' if state else 'off'}")
    return 0


async def do_stop(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    await client.stop(args.id)
    out.emit({"id": args.id, "stopped": True}, f"{args.id}  stopped")
    return 0


async def do_stop_all(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    await client.stop_all()
    out.emit({"stopped": "all"}, "stopped all")
    return 0


async def do_watch(client: SioManipulatorClient, args: argparse.Namespace, out: Output) -> int:
    """Print the known positions, then every change; reconnect (re-printing) unless --no-reconnect."""
    done = asyncio.Event()
    printed = 0
    lost: list[str] = []

    def show(manipulator_id: str, pos: Vec4, moving: bool) -> None:
        nonlocal printed
        if done.is_set():
            return
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        out.emit({"time": round(now, 3), "id": manipulator_id, "position": pos.as_dict(), "moving": moving},
                 f"{stamp}  {manipulator_id}  {fmt_pos(pos)}{'  moving' if moving else ''}")
        printed += 1
        if args.count and printed >= args.count:
            done.set()

    def snapshot() -> None:
        for manipulator_id in client.ids:  # RigDeck sends a snapshot; ephys-link's first poll prints all
            if manipulator_id in client.positions:
                show(manipulator_id, client.positions[manipulator_id], client.moving.get(manipulator_id, False))

    def on_connection(up: bool, error: str | None) -> None:
        if up:
            print(f"{PROG}: reconnected", file=sys.stderr, flush=True)
            snapshot()
            return
        lost.append(error or "connection lost")
        if args.no_reconnect:
            done.set()
        else:
            print(f"{PROG}: {one_line(lost[-1])}; reconnecting", file=sys.stderr, flush=True)

    snapshot()
    client.subscribe(show)
    client.on_connection(on_connection)
    await client.start()  # already connected: the supervisor only watches for a loss and reconnects
    await done.wait()
    if lost and args.no_reconnect:
        out.error(f"connection lost ({lost[-1]})")
        return EXIT_REMOTE
    return 0


ACTIONS: dict[str, Action] = {
    "list": do_list, "info": do_info, "position": do_position, "move": do_move, "depth": do_depth,
    "inside": do_inside, "stop": do_stop, "stop-all": do_stop_all, "watch": do_watch,
}


async def run(args: argparse.Namespace) -> int:
    out = Output(args.json)
    try:
        url = manipulator_url(args.uri)
        token = read_token(args.token_file)
    except UsageError as ex:
        out.error(str(ex))
        return EXIT_USAGE
    client = SioManipulatorClient(url, token=token, timeout=args.timeout, poll_hz=args.poll_hz)
    try:
        try:
            await client.connect()
        except SioUnavailable as ex:
            text, hint = str(ex), ""
            if "refused by server" not in text:
                hint = " (no manipulator server answered there)"
            elif "token" not in text:
                hint = " (ephys-link serves one client at a time: is Pinpoint connected?)"
            out.error(f"{ex}{hint}")
            return EXIT_USAGE
        try:
            return await ACTIONS[args.action](client, args, out)
        except SioRemoteError as ex:
            extra = {}
            if isinstance(ex.data, dict) and isinstance(ex.data.get("Position"), dict):
                extra["position"] = ex.data["Position"]  # where a stopped move halted
            out.error(ex.text, **extra)
            return EXIT_REMOTE
        except (ManipulatorError, ValueError) as ex:  # timeouts, lost connection, unreadable replies
            out.error(str(ex))
            return EXIT_REMOTE
    finally:
        await client.close()


def _common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options accepted before the URI and after the action alike (defaults set once, on the top parser)."""
    keep = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=keep(False),
                        help="one JSON object per line (errors too, as {\"error\": ...})")
    parser.add_argument("--timeout", type=positive, default=keep(DEFAULT_TIMEOUT), metavar="S",
                        help=f"seconds per call (moves: plus distance/speed; default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--token-file", default=keep(None), metavar="PATH",
                        help=f"file holding the server's token (default: ${TOKEN_ENV})")
    parser.add_argument("--poll-hz", type=positive, default=keep(DEFAULT_POLL_HZ), metavar="HZ",
                        help=f"position polls per second against ephys-link (default {DEFAULT_POLL_HZ:g})")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "manipulators", help="list, move, stop and watch manipulators (RigDeck or ephys-link server)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, defaults=True)
    parser.add_argument("uri", metavar="URI", help="sio://host[:port] (default port 3000), http://host:port")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        _common(sub, defaults=False)
        return sub

    action("list", "manipulator ids")
    action("info", "server, platform, ids, push or polling, control")
    action("position", "position of one manipulator (or of all)").add_argument("id", nargs="?", metavar="ID")
    move = action("move", "move to X Y Z W (mm) at --speed (mm/s) and wait")
    move.add_argument("id", metavar="ID")
    for axis in "xyzw":
        move.add_argument(axis, type=finite, metavar=axis.upper())
    depth = action("depth", "drive the depth axis to D (mm) at --speed (mm/s) and wait")
    depth.add_argument("id", metavar="ID")
    depth.add_argument("depth", type=finite, metavar="D")
    inside = action("inside", "set the inside-brain lock")
    inside.add_argument("id", metavar="ID")
    inside.add_argument("state", type=on_off, metavar="on|off")
    for sub in (move, depth):
        sub.add_argument("--speed", type=positive, required=True, metavar="S", help="mm/s (> 0)")
    for sub in (move, depth, inside):
        sub.add_argument("--take-control", action="store_true",
                         help="on a RigDeck server, become the controller first (others become observers)")
    action("stop", "halt one manipulator where it is").add_argument("id", metavar="ID")
    action("stop-all", "halt every manipulator at once")
    watch = action("watch", "print positions as they change")
    watch.add_argument("--count", type=int, default=0, metavar="N", help="exit after N lines")
    watch.add_argument("--no-reconnect", action="store_true", help="exit (status 1) when the connection is lost")
    parser.set_defaults(func=lambda args: asyncio.run(run(args)))
