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
import reprlib
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from transports.rpc.pyon_arrays import PlainArray, decode_array, decode_scalar

MARKER = "__jsonclass__"

#: the most digits of an integer literal: int("9" * n) takes quadratic time; at this bound (Python's
#: own default limit) a 4 MiB line of such integers costs about what a line of small ones does.
#: Python enforces it inside the JSON parser at no cost; an interpreter configured without the limit
#: gets it checked by a hook instead. 2**4000 has 1205 digits.
MAX_INT_DIGITS = 4300
#: containers (lists, dicts, tuples, sets) nested deeper are refused: every consumer may recurse
MAX_DEPTH = 100
#: items of one set / non-str-key dict allowed to share a hash with another item
MAX_EQUAL_HASHES = 16

_CONTAINERS = frozenset({list, tuple, dict, OrderedDict, set, frozenset})


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
            raise PyonError(f"dict marker: {brief(pair)} is not a [key, value] pair")
    _check_hashes("dict", [pair[0] for pair in pairs])
    for pair in pairs:
        try:
            out[pair[0]] = pair[1]
        except TypeError:
            raise PyonError(f"dict marker: key {brief(pair[0])} is not hashable") from None
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


def _real(value: Any, what: str) -> float:
    """A JSON number as a float; never a string (``complex("1e999999j")``) nor a bool."""
    if type(value) is not int and type(value) is not float:
        raise PyonError(f"{what} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise PyonError(f"{what} is too large for a float") from None


def _whole(value: Any, what: str) -> int | None:
    if value is None or type(value) is int:
        return value
    raise PyonError(f"{what} must be an integer or null, got {type(value).__name__}")


def _fraction(numerator: Any, denominator: Any = 1) -> Fraction:
    """Only ints, already bounded by the literal limit: ``Fraction("1e10000000")`` would build a
    ten-million-digit integer and hold the event loop for seconds."""
    if type(numerator) is not int or type(denominator) is not int:
        raise PyonError("Fraction marker needs two integers [numerator, denominator]")
    return Fraction(numerator, denominator)


def _items(name: str, items: Any) -> list[Any]:
    """A marker's item list, with few enough equal hashes to build a set or dict in linear time."""
    if not isinstance(items, list):
        raise PyonError(f"{name} marker needs a list")
    _check_hashes(name, items)
    return items


register(tuple, "tuple", lambda t: [list(t)], lambda items: tuple(_list_arg("tuple")(items)))
register(dict, "dict", _pairs, _dict_from_pairs)
register(OrderedDict, "OrderedDict", _pairs, lambda pairs: _dict_from_pairs(pairs, OrderedDict))
register(set, "set", lambda s: [list(s)], lambda items: set(_items("set", items)))
register(frozenset, "frozenset", lambda s: [list(s)], lambda items: frozenset(_items("frozenset", items)))
register(complex, "complex", lambda c: [c.real, c.imag],
         lambda re, im=0.0: complex(_real(re, "complex real part"), _real(im, "complex imaginary part")))
register(bytes, "bytes", lambda b: [_b64(b)], _unb64)
register(slice, "slice", lambda s: [s.start, s.stop, s.step],
         lambda *args: slice(*(_whole(a, "a slice bound") for a in args)))
register(Fraction, "Fraction", lambda f: [f.numerator, f.denominator], _fraction)


# ---------------------------------------------------------------------------------------------- numpy

def _numpy_encode(obj: Any) -> Any | None:
    """The marker for a numpy object, or None if ``obj`` is not one (numpy never imported here)."""
    if type(obj) is PlainArray:
        if obj.scalar:
            return {MARKER: ["npscalar", [obj.dtype, _b64(obj.data)]]}
        return {MARKER: ["nparray", [list(obj.shape), obj.dtype, _b64(obj.data)]]}
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


_DECODERS["nparray"] = lambda shape, dtype, data: decode_array(shape, dtype, _unb64(data))
_DECODERS["npscalar"] = lambda dtype, data: decode_scalar(dtype, _unb64(data))


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
    """``obj`` as one line of PYON v2 (or indented, for files people read). Raises only PyonError."""
    try:
        tree = to_json(obj)
        if pretty:
            return json.dumps(tree, indent=4)
        return json.dumps(tree, separators=(",", ":"))
    except RecursionError:
        raise PyonError("value nested too deep to encode") from None
    except ValueError as ex:  # PyonError itself, or an int too long for str(), or a circular reference
        if isinstance(ex, PyonError):
            raise
        raise PyonError(f"cannot encode: {ex}") from None


# ------------------------------------------------------------------------------------------- decoding

def brief(value: Any) -> str:
    """A short repr for error messages: the value may be megabytes, and ``str()`` of a big structure
    of long integers alone would take a second."""
    return _BRIEF.repr(value)


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 60
_BRIEF.maxlong = 40


def _object_hook(obj: dict[str, Any]) -> Any:
    if MARKER not in obj:
        return obj
    marker = obj[MARKER]
    if len(obj) != 1 or not isinstance(marker, list) or len(marker) != 2 or not isinstance(marker[0], str):
        raise PyonError(f'a "{MARKER}" object must be exactly {{"{MARKER}": [name, args]}}')
    name, args = marker
    decoder = _DECODERS.get(name)
    if decoder is None:
        raise PyonError(f"unknown PYON type {name[:40]!r}")
    if not isinstance(args, list):
        raise PyonError(f"PYON type {name!r}: args must be a list")
    try:
        return decoder(*args)
    except PyonError:
        raise
    except (TypeError, ValueError, ArithmeticError) as ex:
        raise PyonError(f"PYON type {name!r}: bad args {brief(args)}: {ex}") from None


def _bounded_int(literal: str) -> int:
    """Used only where the interpreter's own limit is off or looser than ours."""
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise PyonError(f"integer literal of {len(literal)} characters (at most {MAX_INT_DIGITS} digits)")
    return int(literal)


def _int_hooks() -> dict[str, Any]:
    """No hook while Python itself refuses longer integer literals (the common case: it costs nothing)."""
    limit = sys.get_int_max_str_digits()
    return {} if 0 < limit <= MAX_INT_DIGITS else {"parse_int": _bounded_int}


def _check_depth(value: Any) -> None:
    """Refuse containers nested deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PyonError(f"values nested more than {MAX_DEPTH} deep")
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        if _CONTAINERS.isdisjoint(set(map(type, children))):  # C speed for the common flat list
            continue
        for child in children:
            if type(child) in _CONTAINERS:
                stack.append((child, depth + 1))


def _check_hashes(name: str, items: list[Any]) -> None:
    """Keys sharing one hash make building a set or dict quadratic (ints k * (2**61 - 1) all hash to 0):
    allow a few, refuse a flood. Unhashable items are left for the constructor to refuse."""
    try:
        distinct = len({hash(item) for item in items})
    except TypeError:
        return
    if len(items) - distinct > MAX_EQUAL_HASHES:
        raise PyonError(f"{name} marker: {len(items) - distinct} items share hashes (at most {MAX_EQUAL_HASHES})")


def decode(text: str | bytes) -> Any:
    """Parse one PYON v2 document, within the bounds above. Raises :class:`PyonError` (a ValueError),
    and nothing else, on anything malformed or too large."""
    try:
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
        if not isinstance(text, str):
            raise PyonError(f"PYON is text, not {type(text).__name__}")
        value = json.loads(text, object_hook=_object_hook, **_int_hooks())
        if text.count("[") + text.count("{") > MAX_DEPTH:  # else it cannot be that deep
            _check_depth(value)
        return value
    except PyonError:
        raise
    except (ValueError, RecursionError, ArithmeticError, TypeError) as ex:  # JSONDecodeError, Unicode...
        if isinstance(ex, RecursionError):
            text = "nested too deep"
        elif "int_max_str_digits" in str(ex):  # Python's own limit, in Python's words
            text = f"integer literal too long (at most {MAX_INT_DIGITS} digits)"
        else:
            text = str(ex)[:200]
        raise PyonError(f"not valid PYON/JSON: {text}") from None


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
