"""MLflow clients that log in to one tracking server, with several servers in one process.

MLflow's client reads MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD from the environment
on every request, for whichever server it calls. `mlops promote` talks to two registries (dev's
and prod's), and the ModelAlias provider serves every alias of a program in one process, so a
client made here sets its own server's credentials for the length of each call, under a
process-wide lock, and puts back what was there before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from model.registry import client_environment

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["TrackingCredentials", "tracking_client"]

_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_LOCK = threading.RLock()


@dataclass(frozen=True)
class TrackingCredentials:
    """A user of an MLflow server's basic-auth app."""

    username: str
    password: str = field(repr=False)


@contextmanager
def _logged_in(credentials: TrackingCredentials) -> Iterator[None]:
    login = dict(zip(_KEYS, (credentials.username, credentials.password), strict=True))
    with _LOCK, client_environment(login):
        yield


class _LoggedInClient:
    """Every method of the wrapped client runs with the credentials in the environment."""

    def __init__(self, client: MlflowClient, credentials: TrackingCredentials) -> None:
        self._client = client
        self._credentials = credentials

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with _logged_in(self._credentials):
                return attribute(*args, **kwargs)

        return cast("Callable[..., Any]", call)


def tracking_client(uri: str, credentials: TrackingCredentials | None = None) -> MlflowClient:
    """An MlflowClient for the server (tracking and registry) at `uri`, logged in when given
    credentials; without them, MLflow's own environment (if any) applies."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client if credentials is None else cast("MlflowClient", _LoggedInClient(client, credentials))
