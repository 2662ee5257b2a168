"""`python -m model.server`: serve one model release (the serving image's entrypoint)."""

from __future__ import annotations

import os

# Before numpy and onnxruntime load: one thread each. The server batches requests itself and
# runs on few cores; BLAS/OpenMP pools sized to the machine would fight the event loop.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

from typing import Annotated  # noqa: E402

import typer  # noqa: E402

from model.server.settings import ServerSettings  # noqa: E402

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    model_uri: Annotated[
        str,
        typer.Option(
            envvar="MLOPS_MODEL_URI", help="Release folder: path, s3://..., models:/<name>/<version>."
        ),
    ],
    model_sha256: Annotated[
        str | None, typer.Option(envvar="MLOPS_MODEL_SHA256", help="Expected model checksum.")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(envvar="MLOPS_MODEL_VERSION", help="Version to report.")
    ] = None,
    host: Annotated[str, typer.Option(envvar="MLOPS_HOST")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="MLOPS_PORT")] = 8080,
    grpc_port: Annotated[
        int, typer.Option(envvar="MLOPS_GRPC_PORT", help="Open Inference Protocol over gRPC; 0: off.")
    ] = 8081,
    max_body_bytes: Annotated[int, typer.Option(envvar="MLOPS_MAX_BODY_BYTES")] = 16 * 1024 * 1024,
    max_batch_rows: Annotated[
        int, typer.Option(envvar="MLOPS_MAX_BATCH_ROWS", help="Most rows per request (413 beyond).")
    ] = 10_000,
    drain_seconds: Annotated[float, typer.Option(envvar="MLOPS_DRAIN_SECONDS")] = 20.0,
    batch_wait_ms: Annotated[
        float, typer.Option(envvar="MLOPS_BATCH_WAIT_MS", help="Longest wait to combine requests.")
    ] = 0.2,
    batch_combined_rows: Annotated[
        int, typer.Option(envvar="MLOPS_BATCH_COMBINED_ROWS", help="Most rows per combined model call.")
    ] = 512,
    load_attempts: Annotated[int, typer.Option(envvar="MLOPS_LOAD_ATTEMPTS")] = 5,
    access_log: Annotated[bool, typer.Option(envvar="MLOPS_ACCESS_LOG")] = False,
    log_level: Annotated[str, typer.Option(envvar="MLOPS_LOG_LEVEL")] = "info",
) -> None:
    """Serve one release over HTTP until SIGTERM, then drain and exit 0."""
    from model.server.server import serve

    try:
        settings = ServerSettings(
            model_uri=model_uri,
            model_sha256=model_sha256,
            model_version=model_version,
            host=host,
            port=port,
            grpc_port=grpc_port,
            max_body_bytes=max_body_bytes,
            max_batch_rows=max_batch_rows,
            drain_seconds=drain_seconds,
            batch_wait_ms=batch_wait_ms,
            batch_combined_rows=batch_combined_rows,
            load_attempts=load_attempts,
            access_log=access_log,
            log_level=log_level,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    serve(settings)


if __name__ == "__main__":
    app()
