"""gRPC load from ghz, the Go load generator: the gRPC counterpart of wrk.

A Python client (even asyncio over grpcio's C core) tops out near a million 1,000-row rows/s
on this machine whatever the server does, so it measured itself, not the servers. ghz is
built once from its Go module into `.tools/bench-peers/` (git-ignored) and is given the
Open Inference Protocol's descriptors as a protoset written from the published stubs that
the server itself uses, so no `.proto` file is copied into the project.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

__all__ = ["GHZ_MODULE", "ensure_ghz", "run_ghz", "write_protoset"]

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.120.0"
_TOOLS = Path(__file__).resolve().parents[1] / ".tools" / "bench-peers" / "ghz-v0.120.0"
_METHOD = "inference.GRPCInferenceService.ModelInfer"


def ensure_ghz(log: Callable[[str], None] = print) -> Path:
    """The ghz binary: `$GHZ`, else the project's build, built with `go install` when missing."""
    if os.environ.get("GHZ"):
        return Path(os.environ["GHZ"])
    binary = _TOOLS / "bin" / "ghz"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise SystemExit("ghz is not built and Go is not on PATH (set GHZ=/path/to/ghz)")
    log(f"building {GHZ_MODULE} into {binary.parent} (Go module proxy, a few minutes, once)")
    env = {**os.environ, "GOBIN": str(binary.parent), "GOFLAGS": "-mod=mod"}
    subprocess.run([go, "install", GHZ_MODULE], check=True, env=env)
    return binary


def write_protoset(path: Path) -> Path:
    """A FileDescriptorSet of the Open Inference Protocol, from the installed stubs."""
    from google.protobuf import descriptor_pb2
    from open_inference.grpc import protocol as pb

    fds = descriptor_pb2.FileDescriptorSet()
    pb.DESCRIPTOR.CopyToProto(fds.file.add())
    path.write_bytes(fds.SerializeToString())
    return path


def run_ghz(
    ghz: Path, protoset: Path, target: str, request: Path, concurrency: int, seconds: float
) -> tuple[float, int]:
    """Requests per second and failed calls: `concurrency` calls in flight on one connection."""
    out = subprocess.run(
        [
            str(ghz), "--insecure", "--protoset", str(protoset), "--call", _METHOD,
            "--binary-file", str(request), "--concurrency", str(concurrency), "--connections", "1",
            "--duration", f"{seconds}s", "--timeout", "30s", "--format", "json",
            "--max-recv-message-size", "1GB", "--max-send-message-size", "1GB", target,
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    codes = report.get("statusCodeDistribution") or {}
    errors = sum(n for code, n in codes.items() if code != "OK")
    return float(report["rps"]) * (1 - errors / max(report["count"], 1)), errors
