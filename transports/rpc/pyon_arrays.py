"""PYON's numpy markers (``nparray``, ``npscalar``), checked before anything is built, with or without numpy.

Why checked: the shape, dtype and data of an array come from the peer. A shape whose product does not
match the data, a dtype of size 0 (any number of elements in no bytes), a structured or object dtype, or
a dimension too large for a C long would each make numpy raise something unexpected, allocate without
bound, or run for long. So the layout is validated here first: a simple dtype (``dtype.str`` form such
as ``<i4``, ``|b1``, ``<U3``, ``<M8[ns]``), at most :data:`MAX_NDIM` dimensions, and exactly
``product(shape) * itemsize`` bytes of data. Every refusal is a ``ValueError`` saying what is wrong
(PYON turns it into its own error).

Why a fallback: sipyco controllers return numpy arrays, and a console (or ``rigdeck rpc``) without numpy
must still read them. Without numpy a marker becomes a :class:`PlainArray`, which knows its shape and
dtype, turns into nested lists with :meth:`PlainArray.tolist` and encodes back to the very same marker.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any

#: numpy's own limit on dimensions (32 before numpy 2, 64 since): the stricter one
MAX_NDIM = 32
#: an empty array (a 0 in its shape) may still have this many elements in its other dimensions
MAX_EMPTY_LISTS = 65536
#: a dtype as ``dtype.str`` writes it: byte order, kind, size in bytes (characters for U), datetime unit
_DTYPE_TEXT = re.compile(r"([<>|=]?)([biufcmMSUV])([1-9][0-9]{0,5})(\[[0-9A-Za-z]{1,6}\])?")
#: struct format per (kind, itemsize); complex is two floats
_STRUCT = {
    ("b", 1): "?",
    ("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
    ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q",
    ("f", 2): "e", ("f", 4): "f", ("f", 8): "d",
    ("c", 8): "ff", ("c", 16): "dd",
}


def parse_dtype(text: Any) -> tuple[str, str, int]:
    """``(byte order, kind, itemsize in bytes)`` of a simple dtype string, or a ValueError."""
    if not isinstance(text, str):
        raise ValueError("numpy dtype must be a string like '<i4'")
    match = _DTYPE_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"numpy dtype {text[:40]!r} refused: only simple dtypes such as '<i4', '<f8', '<U3' "
                         "(no object or structured dtypes)")
    order, kind, size, unit = match.groups()
    if unit and kind not in "mM":
        raise ValueError(f"numpy dtype {text!r}: a unit only goes with datetime/timedelta")
    itemsize = int(size) * (4 if kind == "U" else 1)
    return order or "=", kind, itemsize


def check_shape(shape: Any, itemsize: int, nbytes: int) -> tuple[int, ...]:
    """The shape as a tuple if it is one and holds exactly ``nbytes`` of ``itemsize`` items."""
    if not isinstance(shape, list | tuple) or len(shape) > MAX_NDIM:
        raise ValueError(f"numpy shape must be a list of at most {MAX_NDIM} sizes")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"numpy shape {str(shape)[:60]} must hold sizes >= 0")
    if nbytes % itemsize:
        raise ValueError(f"{nbytes} bytes of data are not a whole number of {itemsize}-byte items")
    count = nbytes // itemsize
    if 0 in shape:
        if count:
            raise ValueError(f"numpy shape {shape} is empty but {nbytes} bytes of data came with it")
        # no data, but tolist() still builds one list per outer index: keep those few
        if math.prod(min(n, MAX_EMPTY_LISTS + 1) for n in shape if n) > MAX_EMPTY_LISTS:
            raise ValueError(f"empty numpy shape {str(shape)[:60]} is too large")
        return tuple(shape)
    total = 1
    for n in shape:  # stop early: the product of hostile sizes could be astronomically large
        total *= n
        if total > count:
            break
    if total != count:
        raise ValueError(f"numpy shape {str(shape)[:60]} does not match {count} items of data")
    return tuple(shape)


def decode_array(shape: Any, dtype: Any, data: bytes) -> Any:
    """A numpy array (a writable copy) if numpy is installed, else a :class:`PlainArray`."""
    order, kind, itemsize = parse_dtype(dtype)
    dims = check_shape(shape, itemsize, len(data))
    try:
        import numpy as np
    except ImportError:
        return PlainArray(dims, dtype, data)
    dt = np.dtype(dtype)
    if dt.hasobject or dt.itemsize != itemsize:
        raise ValueError(f"numpy dtype {dtype!r} refused")
    return np.frombuffer(data, dtype=dt).reshape(dims).copy()


def decode_scalar(dtype: Any, data: bytes) -> Any:
    """A numpy scalar if numpy is installed, else a scalar :class:`PlainArray`."""
    order, kind, itemsize = parse_dtype(dtype)
    if len(data) != itemsize:
        raise ValueError(f"numpy scalar of dtype {dtype} needs {itemsize} bytes, got {len(data)}")
    try:
        import numpy as np
    except ImportError:
        return PlainArray((), dtype, data, scalar=True)
    return np.frombuffer(data, dtype=np.dtype(dtype))[0]


@dataclass(frozen=True)
class PlainArray:
    """A numpy array received where numpy is not installed: shape, dtype string and raw bytes.

    It encodes back to the same ``nparray`` (or, when ``scalar``, ``npscalar``) marker, so it can be
    passed on unchanged.
    """

    shape: tuple[int, ...]
    dtype: str
    data: bytes
    scalar: bool = False

    @property
    def kind(self) -> str:
        return parse_dtype(self.dtype)[1]

    def tolist(self) -> Any:
        """Nested lists of Python values, as ``ndarray.tolist()`` gives; dtypes that plain Python cannot
        read (datetime, void, long double) give their raw bytes per item."""
        order, kind, itemsize = parse_dtype(self.dtype)
        items = self._items(order if order in "<>" else "=", kind, itemsize)
        return _nest(items, self.shape)

    def _items(self, order: str, kind: str, itemsize: int) -> list[Any]:
        chunks = [self.data[i:i + itemsize] for i in range(0, len(self.data), itemsize)]
        if kind == "S":
            return [c.rstrip(b"\0") for c in chunks]
        if kind == "U":
            codec = "utf-32-be" if order == ">" else "utf-32-le"
            return [c.decode(codec, "replace").rstrip("\0") for c in chunks]
        fmt = _STRUCT.get((kind, itemsize))
        if fmt is None:
            return chunks
        values = [v for (v,) in struct.iter_unpack(order + fmt[0], self.data)]
        if kind == "c":
            return [complex(values[i], values[i + 1]) for i in range(0, len(values), 2)]
        return values


def _nest(items: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return items[0]
    if len(shape) == 1:
        return items
    step = math.prod(shape[1:])
    return [_nest(items[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
