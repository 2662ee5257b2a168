"""Pydantic validation errors as one line a person can act on: the key, the problem, the value.

Its own module, importing only pydantic, so the retrain trigger (a small pod) can describe a bad
request without loading the training stack that model.spec imports (scikit-learn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["describe_errors"]


def describe_errors(
    exc: ValidationError,
    prefix: str = "",
    *,
    limit: int | None = None,
    show_values: bool = True,
    root_label: str = "(root)",
) -> str:
    """One clause per problem: the dotted key, what was wrong and the value received.

    `limit` keeps the first problems and counts the rest; `show_values=False` never echoes what
    was received (a request body from outside may hold anything).
    """
    errors = exc.errors()
    lines = []
    for error in errors[:limit]:
        key = prefix + ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input") if show_values else None
        shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
        lines.append(f"{key or root_label}: {message}{shown}")
    more = len(errors) - len(lines)
    return "; ".join(lines) + (f" (and {more} more)" if more else "")
