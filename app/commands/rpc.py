"""``rigdeck rpc HOST PORT ACTION``: talk to any sipyco pc_rpc server (an ARTIQ controller, a RigDeck rig).

Like ``sipyco_rpctool``, but arguments are never evaluated: each ARG is read as a PYON/JSON value
(``1``, ``2.5``, ``true``, ``null``, ``[1,2]``, ``{"a":1}``, ``'"quoted"'``, PYON markers) and falls back
to the plain string when it is not one (so ``hello`` is the string "hello"). ``interactive`` is a
small command loop (``METHOD ARGS...``, ``methods``, ``help``, ``quit``), not a Python prompt.

Results print readably: JSON for JSON values, Python notation for tuples, sets, bytes, complex numbers
and fractions, arrays as their values with the dtype and shape where they matter (``[0, 1, 2, 3]
(int32)``), with or without numpy installed. ``--json`` prints plain JSON instead (for scripts),
``--pyon`` the exact PYON v2 line. Errors, including a server that breaks the protocol, are one line
on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from typing import Any

from app.commands.pyon_text import one_line, plain_json, readable
from transports.rpc import pyon
from transports.rpc.client import AUTO_TARGET, RpcClient

EXIT_REMOTE = 1  # the method raised, or timed out
EXIT_CONNECT = 2  # cannot reach the server / no such target


def parse_value(text: str) -> Any:
    """An ARG as PYON/JSON when it is one, else the string itself. Never eval'd."""
    try:
        return pyon.decode(text)
    except pyon.PyonError:
        return text


def parse_call_args(words: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Positional ARGS; a word ``NAME=VALUE`` whose NAME is an identifier is a keyword argument
    (quote the whole word as JSON, ``'"a=b"'``, to pass such a string positionally)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if sep and name.isidentifier() and not word.startswith(("{", "[", '"')):
            kwargs[name] = parse_value(value)
        else:
            args.append(parse_value(word))
    return args, kwargs


def format_signature(name: str, spec: Any) -> str:
    if not isinstance(spec, dict):
        return f"{name}(...)"
    args = list(spec.get("args") or [])
    defaults = list(spec.get("defaults") or [])
    parts = []
    first_default = len(args) - len(defaults)
    for i, arg in enumerate(args):
        parts.append(f"{arg}={pyon.encode(defaults[i - first_default])}" if i >= first_default else arg)
    if spec.get("varargs"):
        parts.append(f"*{spec['varargs']}")
    elif spec.get("kwonlyargs"):
        parts.append("*")
    kwdefaults = spec.get("kwonlydefaults") or {}
    for arg in spec.get("kwonlyargs") or []:
        parts.append(f"{arg}={pyon.encode(kwdefaults[arg])}" if arg in kwdefaults else arg)
    if spec.get("varkw"):
        parts.append(f"**{spec['varkw']}")
    return f"{name}({', '.join(parts)})"


def print_methods(listing: dict[str, Any]) -> None:
    if listing.get("docstring"):
        print(listing["docstring"])
        print()
    for name, entry in sorted((listing.get("methods") or {}).items()):
        spec, doc = (list(entry) + [None, None])[:2] if isinstance(entry, list | tuple) else (None, None)
        print(format_signature(name, spec))
        if doc:
            for line in str(doc).splitlines():
                print(f"    {line}")
        print()


#: how a result is printed, by ``--json`` / ``--pyon`` / neither
FORMATS = {"text": readable, "json": plain_json, "pyon": pyon.encode}


async def _call(client: RpcClient, method: str, words: list[str], output: str = "text") -> None:
    args, kwargs = parse_call_args(words)
    result = await client.call_ex(method, args, kwargs)
    print(FORMATS[output](result), flush=True)


def error_line(ex: BaseException) -> str:
    return one_line(f"{type(ex).__name__}: {ex}")


async def _interactive(client: RpcClient, output: str = "text") -> int:
    tty = sys.stdin.isatty()
    loop = asyncio.get_running_loop()
    print(f"connected to target {client.selected_target!r}; METHOD ARGS..., 'methods', 'quit'", flush=True)
    while True:
        if tty:
            print("rpc> ", end="", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return 0
        try:
            words = shlex.split(line)
        except ValueError as ex:
            print(f"error: {ex}", flush=True)
            continue
        if not words:
            continue
        if words[0] in ("quit", "exit"):
            return 0
        if words[0] in ("methods", "help", "?"):
            print_methods(await client.method_list())
            continue
        try:
            await _call(client, words[0], words[1:], output)
        except Exception as ex:  # one bad call never ends the session
            print(f"error: {error_line(ex)}", flush=True)
            if not client.connected:
                try:
                    await client.connect()
                except (TimeoutError, OSError) as lost:
                    print(f"error: server lost: {error_line(lost)}", flush=True)
                    return EXIT_CONNECT


async def run(args: argparse.Namespace) -> int:
    target: Any = None if args.action == "list-targets" else (args.target or AUTO_TARGET)
    client = RpcClient(args.host, args.port, target, timeout=args.timeout, connect_timeout=max(args.timeout, 5.0))
    output = getattr(args, "output", None) or "text"
    try:
        await client.connect()
    except (TimeoutError, OSError) as ex:  # ProtocolError and IncompatibleServer are ConnectionErrors
        what = "no answer" if isinstance(ex, asyncio.TimeoutError) else error_line(ex)
        print(f"rigdeck rpc: cannot use {args.host}:{args.port}: {what}", file=sys.stderr)
        return EXIT_CONNECT
    try:
        if args.action == "list-targets":
            print("Target(s):   " + ", ".join(client.targets))
            if client.description:
                print("Description: " + str(client.description))
        elif args.action == "list-methods":
            print_methods(await client.method_list())
        elif args.action == "call":
            await _call(client, args.method, args.args, output)
        else:
            return await _interactive(client, output)
    except Exception as ex:
        print(f"rigdeck rpc: {error_line(ex)}", file=sys.stderr)
        return EXIT_REMOTE
    finally:
        await client.close()
    return 0


def add_output_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """``--json`` / ``--pyon``, accepted before the action and after it (``default`` SUPPRESS there, so
    the sub-command does not undo a choice made before it)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", dest="output", action="store_const", const="json", default=default,
                       help="print results as plain JSON (arrays as lists, tuples and sets as lists...)")
    group.add_argument("--pyon", dest="output", action="store_const", const="pyon", default=default,
                       help="print results as the exact PYON v2 line the server sent")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rpc", help="call a pc_rpc server (ARTIQ controller or RigDeck rig)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")
    add_output_options(parser, None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list-targets", help="the server's targets and description")
    actions.add_parser("list-methods", help="methods of a target, with signatures and docstrings").add_argument(
        "--target", "-t", help="target name (default: the only one)")
    interactive = actions.add_parser("interactive", help="a METHOD ARGS... command loop")
    interactive.add_argument("--target", "-t", help="target name (default: the only one)")
    add_output_options(interactive, argparse.SUPPRESS)
    call = actions.add_parser("call", help="call one method; prints the result readably (or --json, --pyon)")
    call.add_argument("--target", "-t", help="target name (default: the only one)")
    add_output_options(call, argparse.SUPPRESS)
    call.add_argument("method")
    call.add_argument("args", nargs=argparse.REMAINDER, help="PYON/JSON values or strings; NAME=VALUE for keywords")
    parser.set_defaults(func=lambda args: asyncio.run(run(args)))
