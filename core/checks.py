"""Type checks for values that come from files and wires, where ``True`` must not pass for ``1``.

Python's bool is an int, so ``isinstance(x, int)`` lets ``true`` from YAML or JSON through as a port,
a status or a sequence number. These helpers say "a real number, not a bool" once.
"""

from __future__ import annotations

import math
import sys
from typing import Any, TypeGuard

#: the largest int a float can stand for; beyond it math.isfinite raises OverflowError
_FLOAT_MAX_INT = int(sys.float_info.max)


def is_int(value: Any) -> TypeGuard[int]:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or a float, not a bool (NaN and infinities included: see :func:`is_finite`)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value: Any) -> TypeGuard[int | float]:
    """A number (not a bool) that is neither NaN nor infinite.

    An int too large for a float (2**4000 from a hostile peer) is not finite in any sense a rig can use:
    ``math.isfinite`` would raise OverflowError on it, so it answers False instead.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= _FLOAT_MAX_INT
    return is_number(value) and math.isfinite(value)
