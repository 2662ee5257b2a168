"""The model server: MLflow scoring protocol and Open Inference Protocol over one release.

The names below load on first use, so that importing the package does not start the HTTP
stack. Nothing outside this package imports it: training shares only `model.runtime` with
the server, so the training image and the release id leave the server out.
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
