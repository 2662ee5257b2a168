"""The model server: MLflow scoring protocol and Open Inference Protocol over one release."""

from model.server.app import ServerApp, create_app
from model.server.server import serve
from model.server.settings import ServerSettings

__all__ = ["ServerApp", "ServerSettings", "create_app", "serve"]
