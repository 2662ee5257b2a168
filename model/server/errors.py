"""Request errors: a status, a machine-readable code and a message that never echoes the input."""

from __future__ import annotations

from typing import Any

__all__ = ["RequestError", "clean_name"]

_MAX_NAME = 64


def clean_name(name: object) -> str:
    """A field name as it may appear in a response: printable, unquoted and bounded in length."""
    text = name if isinstance(name, str) else f"<{type(name).__name__}>"
    if len(text) > _MAX_NAME:
        text = text[: _MAX_NAME - 3] + "..."
    return "".join(ch if ch.isprintable() and ch not in "'\\" else "?" for ch in text)


class RequestError(Exception):
    """A client error: `status` is 4xx and `code` one of the documented error codes."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        row: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = None if field is None else clean_name(field)
        self.row = row

    def body(self, v2: bool) -> dict[str, Any]:
        """MLflow clients read `error_code`/`message`; KServe V2 clients read `error`."""
        body: dict[str, Any] = {"error_code": self.code, "message": self.message}
        if v2:
            body = {"error": self.message, "error_code": self.code}
        if self.field is not None:
            body["field"] = self.field
        if self.row is not None:
            body["row"] = self.row
        return body


def internal_error() -> RequestError:
    """What a client gets for a failure of the server itself (the trace goes to the log only)."""
    return RequestError(500, "internal_error", "the server failed on this request; see its log")
