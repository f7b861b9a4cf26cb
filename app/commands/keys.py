"""``rigdeck keys new NAME`` / ``rigdeck keys allow PUBLIC_KEY_FILE`` / ``rigdeck keys list``: CURVE keys for zmq://.

A keys folder (``--dir``, default ``$RIGDECK_KEYS`` or ``~/.rigdeck/keys``) holds this machine's keypairs
(``NAME.key`` public, ``NAME.key_secret`` readable by its owner only) and ``allowed/``, the public keys of
the consoles a rig accepts. Typical set-up, once per console and rig pair::

    console$ rigdeck keys new console          # the console's pair (ZmqLink's default client_key)
    rig$     rigdeck keys new rig              # the rig's pair (serve_zmq's default key)
    rig$     rigdeck keys allow console.key    # after copying the console's PUBLIC key over
    # rig.yaml:          uris: [{uri: "zmq://0.0.0.0:11002", keys: ~/.rigdeck/keys}]
    # remote_rigs.yaml:  cams: {uri: "zmq://rig-pc:11002", server_key: rig.key}   (the rig's PUBLIC key)

Secret keys are never printed or logged; only public keys and their short fingerprints are shown.
``allow`` refuses a file that holds a secret key, so a secret never ends up copied around by mistake.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from transports.zmq.keys import (
    ALLOWED_DIR,
    PUBLIC_SUFFIX,
    KeyFileError,
    allow_key,
    default_keys_dir,
    fingerprint,
    load_public,
    new_keypair,
)

EXIT_ERROR = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="make and allow-list CURVE keys for zmq:// rigs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", dest="keys_dir", metavar="DIR",
                        help="keys folder (default: $RIGDECK_KEYS or ~/.rigdeck/keys)")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="make a keypair NAME.key / NAME.key_secret in the keys folder")
    new.add_argument("name", metavar="NAME", help="e.g. 'console' on a console PC, 'rig' on a rig PC")
    new.add_argument("--force", action="store_true", help="replace an existing pair of that name")
    allow = actions.add_parser("allow", help="allow-list a console's public key (.key file) on this rig")
    allow.add_argument("public_key_file", metavar="PUBLIC_KEY_FILE")
    allow.add_argument("--name", help="name in the allow-list (default: the file's name)")
    actions.add_parser("list", help="show this folder's public keys and the allow-list (fingerprints)")
    parser.set_defaults(func=run)


def keys_dir(args: argparse.Namespace) -> Path:
    return Path(args.keys_dir).expanduser() if args.keys_dir else default_keys_dir()


def describe_public(path: Path) -> str:
    """``<fingerprint>  <Z85 public key>``: what an operator compares between two machines."""
    public = load_public(path)
    return f"{fingerprint(public)}  {public.decode('ascii')}"


def cmd_new(args: argparse.Namespace, folder: Path) -> int:
    public, secret = new_keypair(folder, args.name, overwrite=args.force)
    print(f"public key  {public}  (give this file to the other side)")
    print(f"secret key  {secret}  (mode 0600; never copy it anywhere)")
    print(f"            {describe_public(public)}")
    return 0


def cmd_allow(args: argparse.Namespace, folder: Path) -> int:
    target = allow_key(args.public_key_file, folder, args.name)
    print(f"allowed     {target}")
    print(f"            {describe_public(target)}")
    print("a running rig picks this up at the console's next connection (no restart needed)")
    return 0


def cmd_list(folder: Path) -> int:
    if not folder.is_dir():
        print(f"no keys folder at {folder} (make a pair with 'rigdeck keys new NAME')")
        return 0
    sections = [("keypairs", folder), ("allowed consoles", folder / ALLOWED_DIR)]
    for title, where in sections:
        files = sorted(where.glob(f"*{PUBLIC_SUFFIX}")) if where.is_dir() else []
        print(f"{title} in {where}: {len(files)}")
        for path in files:
            try:
                print(f"  {path.name:24s} {describe_public(path)}")
            except KeyFileError as ex:
                print(f"  {path.name:24s} unreadable: {ex}")
    return 0


def run(args: argparse.Namespace) -> int:
    folder = keys_dir(args)
    try:
        if args.keys_action == "new":
            return cmd_new(args, folder)
        if args.keys_action == "allow":
            return cmd_allow(args, folder)
        return cmd_list(folder)
    except (KeyFileError, OSError) as ex:
        print(f"rigdeck keys: {ex}", file=sys.stderr)
        return EXIT_ERROR
