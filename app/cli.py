"""``rigdeck`` command line: one entry point, one module per sub-command in ``app/commands``.

Each module in :data:`COMMANDS` has ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` (the exit code). Errors a user can fix (bad files, bad URIs, unreachable rigs)
are printed as one line and exit 2; they never reach the user as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core.config import ConfigError

#: sub-command modules, in the order ``rigdeck --help`` lists them
COMMANDS: tuple[str, ...] = (
    "gui", "rpc", "watch", "serve", "demo", "run", "transfer", "report", "keys", "manipulators", "relay",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) just the chosen command's: importing every command module would
    load Socket.IO, ZeroMQ and aiohttp (~0.2 s) before the window can even start."""
    parser = argparse.ArgumentParser(prog="rigdeck", description="One console for multi-rig experiments.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ([only] if only in COMMANDS else COMMANDS):
        importlib.import_module(f"app.commands.{name}").register(sub)
    return parser


def with_default_command(argv: list[str]) -> list[str]:
    """Plain ``rigdeck [--rigs FILE]`` opens the console window: put ``gui`` in front of its options."""
    if "gui" not in COMMANDS or any(a in COMMANDS for a in argv) or {"-h", "--help"} & set(argv):
        return argv
    flags = [a for a in argv if a in ("-v", "-vv", "-vvv", "--verbose")]
    return [*flags, "gui", *(a for a in argv if a not in flags)]


def main(argv: list[str] | None = None) -> int:
    argv = with_default_command(list(sys.argv[1:] if argv is None else argv))
    chosen = next((a for a in argv if not a.startswith("-")), None)
    top_help = chosen is None or bool({"-h", "--help"} & set(argv[:argv.index(chosen)]))
    parser = build_parser(None if top_help else chosen)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except ConfigError as ex:
        print(f"rigdeck: {ex}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
