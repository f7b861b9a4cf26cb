"""PYON v2: sipyco's wire and file format — plain JSON plus ``{"__jsonclass__": [name, args]}`` markers.

Why our own: sipyco is not on PyPI, and its legacy PYON v1 decodes with ``eval``. This module never
evaluates anything: a marker names a decoder from a fixed table (plus types an application registers),
and ``args`` are that decoder's positional arguments, already decoded.

Built-in markers (the names and argument shapes are what sipyco peers send):

======================  ==========================================  =======================
Python value            ``args``                                    example
======================  ==========================================  =======================
tuple                   ``[[items...]]``                            ``["tuple",[[1,2]]]``
dict, non-str keys      ``[[[k, v], ...]]``                         ``["dict",[[[3,"x"]]]]``
OrderedDict             ``[[[k, v], ...]]``
set / frozenset         ``[[items...]]``
complex                 ``[real, imag]``
bytes                   ``[base64]``
slice                   ``[start, stop, step]``
Fraction                ``[numerator, denominator]``
numpy array             ``[shape, dtype.str, base64]``              object dtype refused
numpy scalar            ``[dtype.str, base64]``
======================  ==========================================  =======================

numpy is optional: it is only looked at when the value being encoded is a numpy object (which means
numpy is already imported) and only imported when a numpy marker is decoded.

Output is compact (``separators=(",", ":")``), ASCII, one line — so one message is one ``\\n``-ended
line on the wire.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

MARKER = "__jsonclass__"


class PyonError(ValueError):
    """A value that cannot be encoded, or text that is not valid PYON v2."""


# ------------------------------------------------------------------------------------------- registry

#: exact Python type -> (marker name, encode(obj) -> args list)
_ENCODERS: dict[type, tuple[str, Callable[[Any], list[Any]]]] = {}
#: marker name -> decode(*args) -> obj
_DECODERS: dict[str, Callable[..., Any]] = {}


def register(type_: type, name: str, encode: Callable[[Any], list[Any]], decode: Callable[..., Any]) -> None:
    """Teach PYON a custom type: ``encode(obj)`` returns the marker's args (themselves PYON-encodable),
    ``decode(*args)`` rebuilds the object. Matching is on the exact type, so subclasses opt in explicitly.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a PYON type needs a non-empty name")
    _ENCODERS[type_] = (name, encode)
    _DECODERS[name] = decode


def _pairs(mapping: dict[Any, Any]) -> list[Any]:
    return [[[k, v] for k, v in mapping.items()]]


def _dict_from_pairs(pairs: Any, factory: Callable[[], dict[Any, Any]] = dict) -> dict[Any, Any]:
    out = factory()
    if not isinstance(pairs, list):
        raise PyonError("dict marker needs a list of [key, value] pairs")
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise PyonError(f"dict marker: {pair!r} is not a [key, value] pair")
        try:
            out[pair[0]] = pair[1]
        except TypeError:
            raise PyonError(f"dict marker: key {pair[0]!r} is not hashable") from None
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise PyonError("expected a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as ex:
        raise PyonError(f"bad base64: {ex}") from None


def _list_arg(name: str) -> Callable[[Any], list[Any]]:
    def check(items: Any) -> list[Any]:
        if not isinstance(items, list):
            raise PyonError(f"{name} marker needs a list")
        return items

    return check


register(tuple, "tuple", lambda t: [list(t)], lambda items: tuple(_list_arg("tuple")(items)))
register(dict, "dict", _pairs, _dict_from_pairs)
register(OrderedDict, "OrderedDict", _pairs, lambda pairs: _dict_from_pairs(pairs, OrderedDict))
register(set, "set", lambda s: [list(s)], lambda items: set(_list_arg("set")(items)))
register(frozenset, "frozenset", lambda s: [list(s)], lambda items: frozenset(_list_arg("frozenset")(items)))
register(complex, "complex", lambda c: [c.real, c.imag], complex)
register(bytes, "bytes", lambda b: [_b64(b)], _unb64)
register(slice, "slice", lambda s: [s.start, s.stop, s.step], slice)
register(Fraction, "Fraction", lambda f: [f.numerator, f.denominator], Fraction)


# ---------------------------------------------------------------------------------------------- numpy

def _numpy_encode(obj: Any) -> Any | None:
    """The marker for a numpy object, or None if ``obj`` is not one (numpy never imported here)."""
    np = sys.modules.get("numpy")
    if np is None:
        return None
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise PyonError("numpy arrays of object dtype cannot be sent (their items are Python objects)")
        data = _b64(np.ascontiguousarray(obj).tobytes())
        return {MARKER: ["nparray", [list(obj.shape), obj.dtype.str, data]]}
    if isinstance(obj, np.generic):
        if obj.dtype.hasobject:
            raise PyonError("numpy object scalars cannot be sent")
        return {MARKER: ["npscalar", [obj.dtype.str, _b64(obj.tobytes())]]}
    return None


def _numpy_dtype(np: Any, text: Any) -> Any:
    if not isinstance(text, str):
        raise PyonError("numpy dtype must be a string like '<i4'")
    try:
        dtype = np.dtype(text)
    except TypeError as ex:
        raise PyonError(f"bad numpy dtype {text!r}: {ex}") from None
    if dtype.hasobject:
        raise PyonError("numpy object dtype refused")
    return dtype


def _decode_nparray(shape: Any, dtype: Any, data: Any) -> Any:
    import numpy as np

    dt = _numpy_dtype(np, dtype)
    if not isinstance(shape, list | tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise PyonError(f"bad numpy shape {shape!r}")
    try:
        return np.frombuffer(_unb64(data), dtype=dt).reshape(shape).copy()
    except ValueError as ex:
        raise PyonError(f"numpy array data does not match shape {shape} and dtype {dtype}: {ex}") from None


def _decode_npscalar(dtype: Any, data: Any) -> Any:
    import numpy as np

    dt = _numpy_dtype(np, dtype)
    raw = _unb64(data)
    if len(raw) != dt.itemsize:
        raise PyonError(f"numpy scalar of dtype {dtype} needs {dt.itemsize} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dt)[0]


_DECODERS["nparray"] = _decode_nparray
_DECODERS["npscalar"] = _decode_npscalar


# ------------------------------------------------------------------------------------------- encoding

def to_json(obj: Any) -> Any:
    """The JSON-ready tree for ``obj`` (markers in place of non-JSON types)."""
    kind = type(obj)
    if obj is None or kind is bool or kind is str:
        return obj
    if kind is int or kind is float:
        return obj
    marker = _numpy_encode(obj)  # before float/int: np.float64 is a float subclass
    if marker is not None:
        return marker
    if kind is list:
        return [to_json(x) for x in obj]
    if kind is dict and all(type(k) is str for k in obj) and MARKER not in obj:
        return {k: to_json(v) for k, v in obj.items()}
    entry = _ENCODERS.get(kind)
    if entry is not None:
        name, encode = entry
        return {MARKER: [name, to_json(encode(obj))]}
    # enums and other subclasses of the JSON types travel as their base value
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, list):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return to_json(dict(obj))
    raise PyonError(f"cannot encode {kind.__module__}.{kind.__qualname__} in PYON (register it first)")


def encode(obj: Any, pretty: bool = False) -> str:
    """``obj`` as one line of PYON v2 (or indented, for files people read)."""
    tree = to_json(obj)
    if pretty:
        return json.dumps(tree, indent=4)
    return json.dumps(tree, separators=(",", ":"))


# ------------------------------------------------------------------------------------------- decoding

def _object_hook(obj: dict[str, Any]) -> Any:
    if MARKER not in obj:
        return obj
    marker = obj[MARKER]
    if len(obj) != 1 or not isinstance(marker, list) or len(marker) != 2 or not isinstance(marker[0], str):
        raise PyonError(f'a "{MARKER}" object must be exactly {{"{MARKER}": [name, args]}}')
    name, args = marker
    decoder = _DECODERS.get(name)
    if decoder is None:
        raise PyonError(f"unknown PYON type {name!r}")
    if not isinstance(args, list):
        raise PyonError(f"PYON type {name!r}: args must be a list")
    try:
        return decoder(*args)
    except PyonError:
        raise
    except (TypeError, ValueError, ZeroDivisionError) as ex:
        raise PyonError(f"PYON type {name!r}: bad args {args!r}: {ex}") from None


def decode(text: str | bytes) -> Any:
    """Parse one PYON v2 document. Raises :class:`PyonError` (a ValueError) on anything malformed."""
    try:
        return json.loads(text, object_hook=_object_hook)
    except PyonError:
        raise
    except (ValueError, RecursionError) as ex:  # JSONDecodeError, UnicodeDecodeError
        raise PyonError(f"not valid PYON/JSON: {ex}") from None


# ---------------------------------------------------------------------------------------------- files

def store_file(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically: a crash leaves either the old file or the new one.

    Encoding happens before the file is touched, so an unencodable value never truncates anything.
    """
    text = encode(obj, pretty=True) + "\n"
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_file(path: str | os.PathLike[str]) -> Any:
    return decode(Path(path).read_text(encoding="utf-8"))
