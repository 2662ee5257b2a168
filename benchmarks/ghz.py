"""gRPC load from ghz, the Go load generator: the gRPC counterpart of wrk.

On 2 cores the client competes with the server it measures, so the load comes from a compiled
generator rather than a Python one. ghz is built once from its Go module beside the peers'
environments (git-ignored) and is given the Open Inference Protocol's descriptors as a protoset
written from the published stubs the server itself uses, so no `.proto` file is copied here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from benchmarks.peers import PEERS_DIR

__all__ = ["GHZ_MODULE", "ensure_ghz", "run_ghz", "write_protoset"]

_GHZ_VERSION = "v0.120.0"
GHZ_MODULE = f"github.com/bojand/ghz/cmd/ghz@{_GHZ_VERSION}"
_TOOLS = PEERS_DIR / f"ghz-{_GHZ_VERSION}"
_CLIENT_CLOSING = ("the client connection is closing", "use of closed network connection")


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
    ghz: Path, protoset: Path, method: str, target: str, request: Path, concurrency: int, seconds: float
) -> tuple[float, int]:
    """Successful requests per second and failed calls: `concurrency` clients in flight, each on
    its own connection (as wrk's; a server with several processes gets a connection, not a
    call, per process).

    `method` is the gRPC path, `/package.Service/Method`.
    """
    call = method.strip("/").replace("/", ".")
    out = subprocess.run(
        [
            str(ghz), "--insecure", "--protoset", str(protoset), "--call", call,
            "--binary-file", str(request), "--concurrency", str(concurrency),
            "--connections", str(concurrency),
            "--duration", f"{seconds}s", "--timeout", "30s", "--format", "json",
            "--max-recv-message-size", "1GB", "--max-send-message-size", "1GB", target,
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    ok = (report.get("statusCodeDistribution") or {}).get("OK", 0)
    # When the duration ends ghz closes its connection under the calls still in flight; those
    # (at most one per worker) are the client's own doing, not the server's failures.
    closing = sum(
        n
        for message, n in (report.get("errorDistribution") or {}).items()
        if any(sign in message for sign in _CLIENT_CLOSING)
    )
    errors = report["count"] - ok - min(closing, concurrency)
    return float(report["rps"]) * ok / max(report["count"], 1), errors
