"""`python -m model.server`: serve one model release (the serving image's entrypoint).

The command line is argparse, not typer: typer's import pulls in pydantic and click, about
0.15 s of a start-up that must stay well under a second. Every flag falls back to an
MLOPS_* environment variable (argparse converts and checks a text default like a flag),
as docs/serving.md lists.
"""

from __future__ import annotations

import os

# Before numpy and onnxruntime load: one thread each. The server batches requests itself and
# runs on few cores; BLAS/OpenMP pools sized to the machine would fight the event loop.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

from model.server.settings import ServerSettings  # noqa: E402

__all__ = ["app"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(
    parser: argparse.ArgumentParser, name: str, kind: Callable[[str], Any], default: Any, help: str
) -> None:
    variable = "MLOPS_" + name.upper().replace("-", "_")
    parser.add_argument(
        f"--{name}",
        type=kind,
        default=os.environ.get(variable, default),
        help=f"{help} [env {variable}; default {default}]",
    )


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m model.server",
        description="Serve one release over HTTP and gRPC until SIGTERM, then drain and exit 0.",
    )
    _flag(parser, "model-uri", str, None, "Release folder: path, s3://..., models:/<name>/<version>.")
    _flag(parser, "model-sha256", str, None, "Expected model checksum.")
    _flag(parser, "model-version", str, None, "Version to report.")
    _flag(parser, "host", str, "0.0.0.0", "Address to bind.")
    _flag(parser, "port", int, 8080, "HTTP port (predictions, health, /metrics).")
    _flag(parser, "grpc-port", int, 8081, "Open Inference Protocol over gRPC; 0: off.")
    _flag(parser, "max-body-bytes", int, 16 * 1024 * 1024, "Largest request body or gRPC message.")
    _flag(parser, "max-batch-rows", int, 10_000, "Most rows per request (413 beyond).")
    _flag(parser, "drain-seconds", float, 20.0, "Bound on shutdown after SIGTERM.")
    _flag(parser, "max-request-seconds", float, 30.0, "Time limit per request (504 beyond).")
    _flag(parser, "batch-wait-ms", float, 0.2, "Longest wait to combine requests.")
    _flag(parser, "batch-combined-rows", int, 512, "Most rows per combined model call.")
    _flag(parser, "load-attempts", int, 5, "Attempts at fetching an s3:// release.")
    _flag(parser, "drift-window-rows", int, 5000, "Recent rows the drift metrics cover; 0: off.")
    _flag(parser, "log-level", str, "info", "Log level.")
    _flag(parser, "workers", int, 1, "Server processes sharing the ports (for pods with more than one core).")
    # Set by the supervisor (--workers > 1) on the workers it starts; not for users.
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shared-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("MLOPS_ACCESS_LOG", "false"),
        help="uvicorn's access log [env MLOPS_ACCESS_LOG; default off]",
    )
    return parser


def app(args: Sequence[str] | None = None, prog_name: str | None = None) -> None:
    """Parse the command line (or `args`), then serve; exit 2 on bad settings."""
    parser = _parser(prog_name)
    options = parser.parse_args(args)
    if isinstance(options.access_log, str):  # from the environment: argparse leaves it as text
        try:
            options.access_log = _boolean(options.access_log)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"MLOPS_ACCESS_LOG: {exc}")
    if not options.model_uri:
        parser.error("--model-uri (or MLOPS_MODEL_URI) is required")
    try:
        settings = ServerSettings(
            model_uri=options.model_uri,
            model_sha256=options.model_sha256,
            model_version=options.model_version,
            host=options.host,
            port=options.port,
            grpc_port=options.grpc_port,
            max_body_bytes=options.max_body_bytes,
            max_batch_rows=options.max_batch_rows,
            drain_seconds=options.drain_seconds,
            max_request_seconds=options.max_request_seconds,
            batch_wait_ms=options.batch_wait_ms,
            batch_combined_rows=options.batch_combined_rows,
            load_attempts=options.load_attempts,
            drift_window_rows=options.drift_window_rows,
            access_log=options.access_log,
            log_level=options.log_level,
            workers=options.workers,
            worker_index=options.worker_index,
            shared_dir=options.shared_dir,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.supervises:
        from model.server.workers import supervise  # the supervisor imports no server code

        supervise(settings)
    else:
        from model.server.server import serve

        serve(settings)


if __name__ == "__main__":
    app()
