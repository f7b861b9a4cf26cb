"""``rigdeck watch HOST PORT NOTIFIER``: print a sync_struct structure (ARTIQ master, RigDeck rig) as it changes.

Default output is for people: the whole structure (indented JSON, arrays as lists) on every
(re)connection, then one line per change (``setitem a.b = 1``, values shown as ``rigdeck rpc`` shows
them). ``--json`` prints the whole structure as one compact PYON v2 line after every change, for
scripts. The watcher reconnects (and re-prints the structure) when the publisher goes away, unless
``--no-reconnect``. A publisher that breaks the protocol (a mod that is not PYON, breaks its bounds, or
does not apply) costs one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.commands.pyon_text import one_line, plain_json, readable
from core.state import Mod
from transports.rpc import pyon
from transports.rpc.sync_struct import Subscriber

EXIT_LOST = 1
EXIT_CONNECT = 2


def describe_mod(mod: Mod) -> str:
    path = ".".join(str(p) for p in mod.get("path", []))
    where = lambda key: f"{path}.{key}" if path else str(key)  # noqa: E731
    action = mod.get("action")
    if action == "setitem":
        return f"setitem {where(mod['key'])} = {readable(mod['value'])}"
    if action == "delitem":
        return f"delitem {where(mod['key'])}"
    if action == "append":
        return f"append  {path or '<root>'} += {readable(mod['x'])}"
    if action == "insert":
        return f"insert  {path or '<root>'}[{mod['i']}] = {readable(mod['x'])}"
    if action == "pop":
        return f"pop     {path or '<root>'}[{mod['i']}]"
    return readable(mod)


class Printer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sub: Subscriber | None = None
        self.printed = 0
        self.done = asyncio.Event()

    def __call__(self, mod: Mod) -> None:
        try:
            self.show(mod)
        except Exception as ex:  # a value we cannot show costs one line, never a traceback
            print(f"rigdeck watch: cannot show a {str(mod.get('action'))[:20]} mod: {type(ex).__name__}: "
                  f"{str(ex)[:200]}", file=sys.stderr, flush=True)
        self.printed += 1
        if self.args.count and self.printed >= self.args.count:
            self.done.set()

    def show(self, mod: Mod) -> None:
        struct = self.sub.struct if self.sub else None
        if self.args.json:
            print(pyon.encode(struct), flush=True)
        elif mod.get("action") == "init":
            print(f"== {self.args.notifier} @ {self.args.host}:{self.args.port}", flush=True)
            print(plain_json(struct, indent=2), flush=True)
        else:
            print(describe_mod(mod), flush=True)


async def run(args: argparse.Namespace) -> int:
    printer = Printer(args)
    lost: list[str] = []

    def on_lost(why: str) -> None:
        lost.append(why)
        if args.no_reconnect:
            printer.done.set()
        else:
            print(f"rigdeck watch: connection lost ({one_line(why)}); reconnecting", file=sys.stderr, flush=True)

    sub = Subscriber(args.notifier, notify_cb=printer, disconnect_cb=on_lost, connect_timeout=args.timeout)
    printer.sub = sub
    try:
        await sub.connect(args.host, args.port, reconnect=not args.no_reconnect)
    except (TimeoutError, OSError) as ex:  # ProtocolError is a ConnectionError
        what = "no answer" if isinstance(ex, asyncio.TimeoutError) else one_line(str(ex))
        print(f"rigdeck watch: cannot watch {args.notifier!r} at {args.host}:{args.port}: {what}", file=sys.stderr)
        return EXIT_CONNECT
    try:
        await printer.done.wait()
    finally:
        await sub.close()
    if lost and args.no_reconnect:
        print(f"rigdeck watch: connection lost ({one_line(lost[-1])})", file=sys.stderr)
        return EXIT_LOST
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "watch", help="print a sync_struct notifier as it changes", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("notifier", help="notifier name (a RigDeck rig publishes 'state')")
    parser.add_argument("--json", action="store_true", help="one compact JSON line of the whole structure per change")
    parser.add_argument("--count", type=int, default=0, metavar="N", help="exit after N prints (init included)")
    parser.add_argument("--once", dest="count", action="store_const", const=1, help="print the structure and exit")
    parser.add_argument("--no-reconnect", action="store_true", help="exit (status 1) when the publisher goes away")
    parser.add_argument("--timeout", type=float, default=5.0, help="connection timeout in seconds (default 5)")
    parser.set_defaults(func=lambda args: asyncio.run(run(args)))
