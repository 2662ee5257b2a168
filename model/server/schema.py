"""The model's input signature as the server enforces it: column names, order and numeric kinds."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.server.errors import RequestError, clean_name

__all__ = ["FLOAT32_MAX", "Column", "ColumnKind", "InputSchema", "NonFinite", "SchemaError", "check_value"]

ColumnKind = Literal["double", "float", "long", "integer"]
_KINDS: tuple[ColumnKind, ...] = ("double", "float", "long", "integer")
_INT_RANGE = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest magnitude any column takes, double columns included: scikit-learn's forests compute
on float32 inputs and refuse larger values (and a linear model's arithmetic may overflow on them),
so one bound for every estimator gives every request the same answer whichever model serves it."""
_FLOAT32_MAX_SQUARED = FLOAT32_MAX * FLOAT32_MAX
_BLAS_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_SMALL_BLOCK = 256
"""Values up to which a block's range is checked in Python rather than by numpy's reductions."""


class SchemaError(ValueError):
    """The model's signature is missing or uses a type this server does not serve."""


class NonFinite:
    """Stands in for a JSON `NaN`/`Infinity` literal so that the error can name its row and field."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind


@dataclass(frozen=True)
class InputSchema:
    """Every column is required; values must be finite numbers within +-FLOAT32_MAX that fit the
    column's kind."""

    columns: tuple[Column, ...]
    names: tuple[str, ...] = field(init=False)
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    needs_checks: bool = field(init=False, repr=False)
    """True when some column is narrower than double (the fast path then checks per column)."""

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.columns)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "index", {n: i for i, n in enumerate(names)})
        object.__setattr__(self, "needs_checks", any(c.kind != "double" for c in self.columns))

    @property
    def width(self) -> int:
        return len(self.columns)

    @classmethod
    def from_mlmodel(cls, mlmodel: dict[str, Any], mlmodel_path: Path) -> InputSchema:
        """The input signature of a parsed MLmodel (`mlmodel_path` names it in errors)."""
        try:
            raw = json.loads(mlmodel["signature"]["inputs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{mlmodel_path} has no readable input signature: {exc}") from exc
        columns = []
        for spec in raw:
            kind, name = spec.get("type"), spec.get("name")
            if kind not in _KINDS or not isinstance(name, str):
                raise SchemaError(
                    f"signature column {name!r} has type {kind!r}; this server serves named "
                    f"numeric columns only ({', '.join(_KINDS)})"
                )
            columns.append(Column(name, kind))
        if not columns:
            raise SchemaError(f"{mlmodel_path} has an empty input signature")
        return cls(tuple(columns))

    def check_block(self, block: np.ndarray) -> bool:
        """Whether a numeric block (rows x columns, in schema order) fits every column's kind."""
        # NaN fails both comparisons; integer blocks (int64, uint64) are always within the bound.
        if block.dtype.kind == "f" and not _within_float32(block):
            return False
        if not self.needs_checks:
            return True
        for j, column in enumerate(self.columns):
            values = block[:, j]
            if column.kind in _INT_RANGE:
                if block.dtype.kind == "f":
                    return False
                low, high = _INT_RANGE[column.kind]
                if values.min() < low or values.max() > high:
                    return False
        return True


def _within_float32(block: np.ndarray) -> bool:
    """Whether every value of a float block is within +-FLOAT32_MAX (NaN is not). A few rows are
    compared as Python floats: numpy's two reductions were a quarter of a single row's decoding
    (cachegrind instruction counts), these builtins half of that."""
    if block.size <= _SMALL_BLOCK:
        values = block.ravel().tolist()
        # The sum is NaN or infinite when a value is (or when values beyond the bound overflow
        # it: refused either way).
        return not values or (
            math.isfinite(sum(values)) and min(values) >= -FLOAT32_MAX and max(values) <= FLOAT32_MAX
        )
    if block.dtype in _BLAS_FLOATS and block.flags.c_contiguous:
        # One pass where min and max take two. No square exceeds the sum of squares (each term is
        # non-negative and rounding is monotonic), so a sum below the bound's square clears every
        # value; NaN, infinities, values near the bound and sums that overflow go to the exact
        # check below. 10,000 rows of 20 float64: 24 us against 39.
        flat = block.reshape(-1)
        if float(np.dot(flat, flat)) < _FLOAT32_MAX_SQUARED:
            return True
    return bool(block.min() >= -FLOAT32_MAX and block.max() <= FLOAT32_MAX)


def _kind_phrase(kind: ColumnKind) -> str:
    return {
        "double": "a finite number within +-3.4e38 (double; the range every estimator serves)",
        "float": "a finite number within float32 range (float)",
        "long": "an integer within int64 range (long)",
        "integer": "an integer within int32 range (integer)",
    }[kind]


def check_value(value: Any, column: Column, row: int) -> float | int:
    """Validate one value; the error names the row and the column and says what was expected."""
    kind = column.kind
    name = clean_name(column.name)
    expected = _kind_phrase(kind)

    def fail(code: str, what: str) -> RequestError:
        return RequestError(
            400, code, f"row {row}, column '{name}': {what}; expected {expected}", field=column.name, row=row
        )

    value_type = type(value)
    if value_type is bool:
        raise fail("type_mismatch", "got a boolean")
    if value_type is int:
        if kind in _INT_RANGE:
            low, high = _INT_RANGE[kind]
            if not low <= value <= high:
                raise fail("out_of_range", "got an integer outside the column's range")
            return value
        if abs(value) > FLOAT32_MAX:
            raise fail("out_of_range", "got an integer outside the column's range")
        return value
    if value_type is float:
        if not math.isfinite(value):
            raise fail("out_of_range", "got a number outside the double range")
        if kind in _INT_RANGE:
            raise fail("type_mismatch", "got a floating-point number")
        if abs(value) > FLOAT32_MAX:
            raise fail("out_of_range", "got a number beyond +-3.4e38")
        return value
    if value is None:
        raise fail("null_value", "got null, and the signature does not allow missing values")
    if value_type is NonFinite:
        raise fail("non_finite", f"got {value.literal}, and the signature does not allow it")
    if value_type is str:
        raise fail("type_mismatch", "got a string")
    if value_type is list:
        raise fail("type_mismatch", "got an array")
    if value_type is dict:
        raise fail("type_mismatch", "got an object")
    raise fail("type_mismatch", f"got a {value_type.__name__}")
