"""Checks of the arguments every entry point shares (tag, step, caps, dtypes, budgets),
and warnings given once."""

from __future__ import annotations

import numbers
import operator
import warnings
from typing import Any

import numpy as np

from tb_convfilters._record import encoding

# Event steps are int64.
MAX_STEP = 2**63 - 1


def check_tag(tag: Any) -> str:
    """Returns `tag`, or raises for anything but a non-empty string."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag={tag!r} must be a non-empty string")
    return tag


def check_step(step: Any) -> int:
    """Returns `step` as an int, or raises for negative and non-integer steps."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        if hasattr(step, "numpy"):  # a scalar tf.Tensor / tf.Variable
            return check_step(step.numpy().item())
        raise TypeError(f"step={step!r} must be a non-negative integer")
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"step={step!r} must be a non-negative integer up to 2**63-1")
    return int(step)


def _as_array(data: Any) -> np.ndarray:
    try:
        a = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise TypeError(f"data of type {type(data).__name__} is not an array: {e}") from None
    if a.dtype.kind in "OSUVMmb" or np.iscomplexobj(a):
        if a.dtype.name != "bfloat16":
            raise TypeError(
                f"data has dtype {a.dtype.name!r}; expected a real numeric array of "
                + ", ".join(encoding.STORABLE_DTYPES)
            )
    return a


def check_positive_int(value: Any, name: str, optional: bool = False) -> int | None:
    """`value` as an int, or a ValueError naming the argument (None passes if `optional`)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise ValueError(f"{name}={value!r} must be {allowed}")
    return int(value)


def check_cap(cap: Any, name: str) -> int | list[int] | None:
    """`cap` checked: None, a positive int (the first N) or a non-empty list of indices."""
    if cap is None:
        return None
    if isinstance(cap, numbers.Integral) and not isinstance(cap, bool):
        if cap < 1:
            raise ValueError(f"{name}={cap!r} must be a positive integer or a list of indices")
        return int(cap)
    try:
        picked = [operator.index(i) for i in cap]
    except TypeError:
        raise TypeError(f"{name}={cap!r} must be a positive integer or a list of indices") from None
    if not picked or min(picked) < 0:
        raise ValueError(f"{name}={cap!r} must be a non-empty list of indices >= 0")
    return picked


FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


def check_float_dtype(dtype: Any) -> str | None:
    """`dtype` for a model's float tensors: None (as they are) or a float dtype."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"dtype={dtype!r} cannot be stored for a model's float tensors; expected None or "
            "one of: "
            + ", ".join(FLOAT_DTYPES)
            + (" (integer dtypes would truncate them)" if dtype in encoding.STORABLE_DTYPES else "")
        )
    return dtype


_warned: set[tuple] = set()


def warn_once(key: tuple, message: str, stacklevel: int = 2) -> None:
    """`message` as a UserWarning, the first time `key` is seen in this process.

    `stacklevel` counts from the function calling this one (1)."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message + " (Warned once.)", UserWarning, stacklevel=stacklevel + 1)


def check_budget_mb(budget_mb: Any) -> float | None:
    """Returns `budget_mb` as a float (None disables the check), or raises."""
    if budget_mb is None:
        return None
    if isinstance(budget_mb, bool) or not isinstance(budget_mb, numbers.Real) or not budget_mb > 0:
        raise ValueError(f"budget_mb={budget_mb!r} must be a positive number of MiB or None")
    return float(budget_mb)
