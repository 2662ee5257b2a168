"""Server configuration: one frozen object built by the CLI (flags, then MLOPS_* variables)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["MAX_DRIFT_WINDOW_ROWS", "MAX_WORKERS", "ServerSettings", "configure_logging"]

MAX_DRIFT_WINDOW_ROWS = 1_000_000
"""The drift window holds rows x (features + 1) float64 values: 5,000 rows of 30 features is 1.2 MB."""


MAX_WORKERS = 64
"""Most server processes --workers may start."""


@dataclass(frozen=True)
class ServerSettings:
    model_uri: str
    """Release folder: a path, file://, s3://bucket/<model>/<release_id>, models:/<name>/<version>
    or models:/<name>@<alias>."""
    model_sha256: str | None = None
    """Expected checksum of the model folder; None trusts release.json's model_sha256."""
    model_version: str | None = None
    """Version reported in headers and V2 metadata; None: the registry version, else the release id."""
    host: str = "0.0.0.0"
    port: int = 8080
    grpc_port: int = 8081
    """The Open Inference Protocol over gRPC; 0 turns it off."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Larger bodies get 413 before any byte is parsed."""
    max_batch_rows: int = 10_000
    """Most rows one request may carry (413 beyond)."""
    drain_seconds: float = 20.0
    """Upper bound on shutdown after SIGTERM: keep serving, then finish in-flight requests, exit 0."""
    max_request_seconds: float = 30.0
    """Time limit per request, from its arrival to its answer: 504 (gRPC DEADLINE_EXCEEDED) beyond, 408
    when its body has not arrived by then. The serving component passes mlops:serving.max_request_seconds."""
    batch_wait_ms: float = 0.2
    """Longest a model call waits for requests that are still being decoded (0: never waits)."""
    batch_combined_rows: int = 512
    """Most rows one model call combines from concurrent requests."""
    load_attempts: int = 5
    """Attempts at fetching an s3:// release when errors are transient (backoff doubles from 0.5 s)."""
    drift_window_rows: int = 5000
    """Recent rows the drift metrics are computed over (0: drift monitoring off)."""
    access_log: bool = False
    log_level: str = "info"
    workers: int = 1
    """Server processes sharing the ports (SO_REUSEPORT), each with its own event loop and model
    copy; more than 1 runs a supervisor that starts, watches and drains them. For pods given
    more than one core: one process's Python runs on one core at a time."""
    worker_index: int | None = None
    """Set by the supervisor for each worker it starts (0 .. workers-1); None otherwise."""
    shared_dir: str | None = None
    """Set by the supervisor: the folder its workers share metrics, readiness and drift windows in."""

    def __post_init__(self) -> None:
        checks = {
            "port": 0 <= self.port <= 65535,
            "grpc_port": 0 <= self.grpc_port <= 65535,
            "max_body_bytes": self.max_body_bytes > 0,
            "max_batch_rows": self.max_batch_rows > 0,
            "drain_seconds": self.drain_seconds >= 0,
            "max_request_seconds": self.max_request_seconds > 0,
            "batch_wait_ms": 0 <= self.batch_wait_ms <= 1000,
            "batch_combined_rows": self.batch_combined_rows > 0,
            "load_attempts": self.load_attempts > 0,
            "drift_window_rows": 0 <= self.drift_window_rows <= MAX_DRIFT_WINDOW_ROWS,
            "workers": 1 <= self.workers <= MAX_WORKERS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid server setting {bad[0]}={getattr(self, bad[0])!r} (ports 0-65535, sizes > 0, "
                f"drain >= 0, request limit > 0, batch wait 0-1000 ms, "
                f"drift window 0-{MAX_DRIFT_WINDOW_ROWS} rows, workers 1-{MAX_WORKERS})"
            )
        if self.workers > 1 and self.port == 0:
            raise ValueError("workers > 1 share one HTTP port: give --port (MLOPS_PORT), not 0")
        if not self.model_uri:
            raise ValueError("model_uri is required: pass --model-uri or set MLOPS_MODEL_URI")

    @property
    def supervises(self) -> bool:
        """Whether this process is the supervisor of several workers rather than a server."""
        return self.workers > 1 and self.worker_index is None


def configure_logging(settings: ServerSettings) -> None:
    """The server's log format; a worker's lines carry its index (mlops.server[1])."""
    worker = "" if settings.worker_index is None else f"[{settings.worker_index}]"
    logging.basicConfig(
        level=settings.log_level.upper(), format=f"%(asctime)s %(levelname)s %(name)s{worker}: %(message)s"
    )
