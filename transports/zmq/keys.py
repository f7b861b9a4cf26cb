"""CURVE keys for ``zmq://``: key files, the allow-list folder, and the ZAP authenticator.

Layout of a keys folder (default ``$RIGDECK_KEYS`` or ``~/.rigdeck/keys``):

- ``NAME.key`` (public) and ``NAME.key_secret`` (public + secret, mode 0600), the zcert text format
  pyzmq's ``zmq.auth`` reads and writes; ``rigdeck keys new NAME`` makes a pair;
- ``allowed/*.key``: public keys of the consoles a rig accepts; ``rigdeck keys allow FILE`` adds one.

The allow-list is re-read when the folder changes, so allowing a console needs no rig restart. Keys
are never logged: refusals name a short fingerprint (``sha256:`` of the public key, 12 hex digits),
and pyzmq's authenticator gets a logger of its own that is kept quiet (it logs client keys at debug).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

log = logging.getLogger(__name__)

ALLOWED_DIR = "allowed"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
DEFAULT_CONSOLE_KEY = "console"
DEFAULT_RIG_KEY = "rig"
#: the ZAP domain a CURVE rig socket announces; the allow-list callback is registered for exactly this
#: domain (pyzmq's authenticator answers "Unknown domain" for any domain it has no provider for)
ZAP_DOMAIN = "rigdeck"


class KeyFileError(ValueError):
    """A key file or folder that cannot be used; the message names the file and the problem."""


def default_keys_dir() -> Path:
    env = os.environ.get("RIGDECK_KEYS")
    return Path(env).expanduser() if env else Path.home() / ".rigdeck" / "keys"


def fingerprint(public_key: bytes | str) -> str:
    """A short, log-safe name for a public key."""
    raw = public_key.encode("ascii") if isinstance(public_key, str) else bytes(public_key)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:12]


def _check_name(name: str) -> str:
    if not name or any(c in name for c in "/\\") or name.startswith(".") or len(name) > 100:
        raise KeyFileError(f"key name {name!r}: use letters, digits, '-', '_' (no path separators)")
    return name


def new_keypair(folder: str | os.PathLike[str], name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (0600) into ``folder``; never silently replace a pair."""
    _check_name(name)
    folder = Path(folder).expanduser()
    public, secret = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    if not overwrite and (public.exists() or secret.exists()):
        raise KeyFileError(f"{secret if secret.exists() else public}: a key named {name!r} exists already")
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even for an instant
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(folder), name)
    finally:
        os.umask(old_umask)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    return Path(public_file), Path(secret_file)


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key in a ``.key`` (or ``.key_secret``) file."""
    path = Path(path).expanduser()
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except OSError as ex:
        raise KeyFileError(f"{path}: cannot read key file: {ex.strerror or ex}") from None
    except Exception as ex:  # pyzmq raises ValueError or zmq errors for malformed files
        raise KeyFileError(f"{path}: not a CURVE key file ({type(ex).__name__})") from None
    if not public or len(public) != 40:
        raise KeyFileError(f"{path}: no public-key line found")
    return public


def load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``.key_secret`` file."""
    path = Path(path).expanduser()
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except OSError as ex:
        raise KeyFileError(f"{path}: cannot read key file: {ex.strerror or ex}") from None
    except Exception as ex:
        raise KeyFileError(f"{path}: not a CURVE key file ({type(ex).__name__})") from None
    if not secret or len(secret) != 40 or not public or len(public) != 40:
        raise KeyFileError(f"{path}: holds no secret key (a public .key file was given where a .key_secret "
                           "file is needed)")
    return public, secret


def allow_key(public_key_file: str | os.PathLike[str], folder: str | os.PathLike[str],
              name: str | None = None) -> Path:
    """Copy a console's public key into ``folder/allowed``. Refuses files holding a secret key."""
    source = Path(public_key_file).expanduser()
    public = load_public(source)
    try:
        _, secret = zmq.auth.load_certificate(str(source))
    except Exception:
        secret = None
    if secret:
        raise KeyFileError(f"{source}: holds a SECRET key; allow-list the public '.key' file instead "
                           "(the secret key must never leave the console)")
    name = _check_name(name or source.name.removesuffix(SECRET_SUFFIX).removesuffix(PUBLIC_SUFFIX))
    allowed = Path(folder).expanduser() / ALLOWED_DIR
    allowed.mkdir(parents=True, exist_ok=True)
    target = allowed / f"{name}{PUBLIC_SUFFIX}"
    if target.exists():
        if load_public(target) == public:
            return target
        raise KeyFileError(f"{target}: a different key is already allowed under the name {name!r}")
    shutil.copyfile(source, target)
    os.chmod(target, 0o644)
    return target


class AllowList:
    """Public keys of ``folder/allowed/*.key``, re-read when the folder's contents change.

    pyzmq's authenticator calls :meth:`callback` for every CURVE handshake (``configure_curve_callback``).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser() / ALLOWED_DIR
        self._keys: set[bytes] = set()
        self._stamp: Any = None
        self._refused_logged: dict[str, float] = {}
        self.refusals = 0
        self.reload()

    def _current_stamp(self) -> Any:
        try:
            return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                                for p in self.folder.glob(f"*{PUBLIC_SUFFIX}")))
        except OSError:
            return None

    def reload(self) -> None:
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return
        keys = set()
        for path in sorted(self.folder.glob(f"*{PUBLIC_SUFFIX}")):
            try:
                keys.add(load_public(path))
            except KeyFileError as ex:
                log.warning("CURVE allow-list: skipping %s", ex)
        self._keys, self._stamp = keys, stamp
        log.info("CURVE allow-list %s: %d console key(s)", self.folder, len(keys))

    def __len__(self) -> int:
        return len(self._keys)

    def allowed(self, public_key: bytes) -> bool:
        self.reload()
        return bytes(public_key) in self._keys

    def callback(self, domain: str, key: bytes) -> bool:
        ok = self.allowed(key)
        if not ok:
            self.refusals += 1
            name = fingerprint(key)
            now = time.monotonic()
            if now - self._refused_logged.get(name, -1e9) > 10.0:  # one line per key per 10 s, not a flood
                if len(self._refused_logged) > 1000:
                    self._refused_logged.clear()
                self._refused_logged[name] = now
                log.warning("CURVE: refused a console whose key %s is not in the allow-list %s", name, self.folder)
        return ok


def start_authenticator(context: zmq.asyncio.Context, allow_list: AllowList) -> AsyncioAuthenticator:
    """Run pyzmq's asyncio ZAP handler on ``context`` with ``allow_list`` deciding CURVE clients."""
    quiet = logging.getLogger(f"{__name__}.zap")
    quiet.setLevel(logging.WARNING)  # pyzmq logs client keys at debug level; we log fingerprints instead
    auth = AsyncioAuthenticator(context, log=quiet)
    auth.start()
    auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=allow_list)
    return auth
