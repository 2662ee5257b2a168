"""The model server: MLflow scoring protocol and Open Inference Protocol over one release.

The names below load on first use, so that training, which imports only
`model.server.runtime` to check the runtime it compiles, does not import the HTTP stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.server.app import ServerApp, create_app
    from model.server.server import serve
    from model.server.settings import ServerSettings

__all__ = ["ServerApp", "ServerSettings", "create_app", "serve"]

_HOMES = {
    "ServerApp": "model.server.app",
    "create_app": "model.server.app",
    "serve": "model.server.server",
    "ServerSettings": "model.server.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
