"""PYON values for people and for scripts: what ``rigdeck rpc`` and ``rigdeck watch`` print.

A sipyco controller returns numpy arrays, tuples, sets, bytes, complex numbers, fractions. Printed as
PYON they are ``{"__jsonclass__":["nparray",[[4],"<i4","AAAAAAEA..."]]}``, which nobody can read.

- :func:`readable`: JSON for the JSON types (``"text"``, ``null``, ``true``, ``{"a": 1}``), Python
  notation for the others (``(1, 2)``, ``{1, 2}``, ``b"\\x00"``, ``(1+2j)``, ``1/3``), and arrays as
  their values, ``[0, 1, 2, 3] (int32)``: the dtype when it is not the obvious one (int64, float64,
  bool, complex128, text), the shape when the nested lists do not show it (0-d, empty dimensions);
- :func:`plain`: the same value as plain JSON (tuples and sets as lists, arrays as nested lists,
  bytes as base64 text, complex / Fraction / slice as small objects, non-finite floats as the strings
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, non-string keys as their readable text).

Both work with or without numpy: arrays received without it are :class:`PlainArray` values.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from transports.rpc.pyon_arrays import PlainArray

#: dtypes whose values speak for themselves
_OBVIOUS = {"int64", "float64", "bool", "complex128"}
_KIND_NAMES = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex"}


# ------------------------------------------------------------------------------------------- arrays

def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and hasattr(value, "tolist")


def _array_parts(value: Any) -> tuple[Any, str, tuple[int, ...]] | None:
    """``(nested lists or scalar, dtype name, shape)`` of an array or numpy scalar, else None."""
    if isinstance(value, PlainArray):
        return value.tolist(), _plain_dtype_name(value.dtype), value.shape
    if _is_numpy(value):
        return value.tolist(), str(value.dtype), tuple(getattr(value, "shape", ()))
    return None


def _plain_dtype_name(text: str) -> str:
    kind, size = text.lstrip("<>|=")[0], text.lstrip("<>|=")[1:]
    if kind in _KIND_NAMES and size.isdigit():
        return "bool" if kind == "b" else f"{_KIND_NAMES[kind]}{int(size) * 8}"
    return text


def _annotation(dtype: str, shape: tuple[int, ...], numpy_scalar: bool) -> str:
    notes = []
    if dtype not in _OBVIOUS and not dtype.startswith(("<U", ">U", "|S", "str", "bytes")):
        notes.append(dtype)
    if not numpy_scalar and (not shape or 0 in shape):
        notes.append(f"shape {'x'.join(map(str, shape)) or '()'}")
    return f" ({', '.join(notes)})" if notes else ""


# ----------------------------------------------------------------------------------------- readable

def readable(value: Any) -> str:
    """One line a person reads (see the module docstring)."""
    parts = _array_parts(value)
    if parts is not None:
        items, dtype, shape = parts
        scalar = (value.scalar if isinstance(value, PlainArray) else not hasattr(value, "__len__")) and not shape
        return readable(items) + _annotation(dtype, shape, scalar)
    for kind, show in _READABLE:
        if isinstance(value, kind):
            return show(value)
    return repr(value)


def _float_text(value: float) -> str:
    return repr(value) if math.isfinite(value) else {"nan": "NaN", "inf": "Infinity"}.get(str(value), "-Infinity")


def _seq(open_: str, items: Any, close: str) -> str:
    return open_ + ", ".join(readable(x) for x in items) + close


def _tuple_text(value: tuple[Any, ...]) -> str:
    return "(" + readable(value[0]) + ",)" if len(value) == 1 else _seq("(", value, ")")


def _set_text(value: set[Any] | frozenset[Any]) -> str:
    if not value:
        return "set()" if isinstance(value, set) else "frozenset()"
    return "{" + ", ".join(sorted(readable(x) for x in value)) + "}"


def _dict_text(value: dict[Any, Any]) -> str:
    return "{" + ", ".join(f"{readable(k)}: {readable(v)}" for k, v in value.items()) + "}"


def _bytes_text(value: bytes) -> str:
    text = repr(value)  # b'...' with escapes; the double-quoted form matches the rest of the line
    return 'b"' + text[2:-1].replace('"', '\\"').replace("\\'", "'") + '"' if text.startswith("b'") else text


_READABLE: list[tuple[type | tuple[type, ...], Callable[[Any], str]]] = [
    (bool, lambda v: "true" if v else "false"),
    (type(None), lambda v: "null"),
    (int, str),
    (float, _float_text),
    (str, lambda v: json.dumps(v, ensure_ascii=False)),
    (list, lambda v: _seq("[", v, "]")),
    (tuple, _tuple_text),
    (dict, _dict_text),
    ((set, frozenset), _set_text),
    (bytes, _bytes_text),
    (complex, repr),
    (Fraction, lambda v: f"{v.numerator}/{v.denominator}"),
    (slice, lambda v: f"slice({readable(v.start)}, {readable(v.stop)}, {readable(v.step)})"),
]


# -------------------------------------------------------------------------------------------- plain

def plain(value: Any) -> Any:
    """The value as plain JSON data (see the module docstring)."""
    parts = _array_parts(value)
    if parts is not None:
        return plain(parts[0])
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _float_text(value)
    if isinstance(value, list | tuple):
        return [plain(x) for x in value]
    if isinstance(value, set | frozenset):
        return [plain(x) for x in sorted(value, key=readable)]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else readable(k): plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, complex):
        return {"real": plain(value.real), "imag": plain(value.imag)}
    if isinstance(value, Fraction):
        return {"numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, slice):
        return {"start": plain(value.start), "stop": plain(value.stop), "step": plain(value.step)}
    return str(value)


def plain_json(value: Any, indent: int | None = None) -> str:
    """:func:`plain` as JSON text (one line unless ``indent``)."""
    return json.dumps(plain(value), indent=indent, separators=None if indent else (",", ":"))


def one_line(text: str, limit: int = 300) -> str:
    """A peer's text (an error message, a reason) as one short line: it may hold newlines or quote a
    hostile line of megabytes."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
