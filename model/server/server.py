"""Run the app under uvicorn with Kubernetes-friendly shutdown; `serve` is the entry point."""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

from model.server.app import ServerApp, create_app
from model.server.http_protocol import BodyProtocol
from model.server.malloc import keep_freed_memory
from model.server.settings import ServerSettings, configure_logging
from model.server.workers import listening_socket, supervise

__all__ = ["serve"]

log = logging.getLogger("mlops.server")

_GRACE_CAP = 5.0
"""Longest the server keeps accepting connections after SIGTERM (while endpoints update)."""


class _DrainingServer(uvicorn.Server):
    """On SIGTERM: unready at once, keep serving (each response closing its connection) until
    clients have gone (no open HTTP connection, no gRPC call for half a second) or a grace period
    passed, then stop accepting, finish in-flight requests (HTTP, then gRPC) within what is left
    of the drain time, and return normally so that the process exits 0."""

    def __init__(self, config: uvicorn.Config, app: ServerApp, drain_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_seconds = drain_seconds
        self._grace = min(drain_seconds / 2, _GRACE_CAP)
        self._drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started is not None:
            log.warning("second signal %s: stopping now", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        self._drain_started = time.monotonic()
        self._app.begin_drain()
        log.info(
            "signal %s: unready, draining for at most %.1fs", signal.Signals(sig).name, self._drain_seconds
        )

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self._drain_started is None:
            return False
        elapsed = time.monotonic() - self._drain_started
        if elapsed >= self._grace or (not self.server_state.connections and not self._app.grpc_busy()):
            # uvicorn annotates this as int but only hands it to asyncio.wait_for.
            self.config.timeout_graceful_shutdown = max(0.1, self._drain_seconds - elapsed)  # type: ignore[assignment]
            self.should_exit = True
            return True
        return False


def serve(settings: ServerSettings) -> None:
    """Serve one release until SIGTERM/SIGINT; returns after a graceful drain. With more than one
    worker, supervise them instead (model.server.workers), exiting with their outcome."""
    if settings.supervises:
        supervise(settings)
        return
    configure_logging(settings)
    keep_freed_memory()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # uvicorn annotates this as an asyncio.Protocol class but only calls it.
        http=BodyProtocol.with_limit(settings.max_body_bytes),  # type: ignore[arg-type]
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        log_level=settings.log_level,
        server_header=False,
        timeout_graceful_shutdown=int(settings.drain_seconds) or None,
    )
    server = _DrainingServer(config, app, settings.drain_seconds)
    log.info("listening on %s:%d; loading %s", settings.host, settings.port, settings.model_uri)
    server.run(None if settings.worker_index is None else [listening_socket(settings.host, settings.port)])
