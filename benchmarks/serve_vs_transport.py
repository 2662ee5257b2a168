"""Benchmark: how close the model server runs to its transports' own limits and to its model.

    .venv/bin/python -m benchmarks.serve_vs_transport [--model logistic_regression] [--workers 1]
        [--rounds 3] [--duration 5] [--json-out FILE]

For 1,000- and 10,000-row batches as binary tensors over HTTP (wrk) and as raw tensors over gRPC
(ghz), at concurrency 4, it times our server against its transport alone: uvicorn, or grpcio,
draining each request and answering the bytes our server answered to it, with nothing in between
(`benchmarks/bare_transports.py`). Each load runs on both, alternating, --rounds times; figures are
medians. Per load it reports rows per second, server CPU per request (the process tree's user
and system time over the requests served) and the in-process compiled runtime's rate on the
same rows.

Why: a target such as "within 2x of the in-process runtime" is out of reach whenever the
transport alone is slower than that, and the bare transport shows it in the same run. It also
shows how much of a request's CPU is the server's own work, which is all that a change to the
server can remove. Not a test: it asserts nothing, only reports. Needs `wrk` on PATH and Go
(ghz is built once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.ghz import ensure_ghz, run_ghz, write_protoset
from benchmarks.serve_models import MODEL_NAMES, train_bench_models
from benchmarks.serve_vs_mlflow import (
    _first_answer,
    _free_port,
    _stop,
    cpu_ms_per_request,
    launch_ours,
    run_wrk,
    tree_cpu_seconds,
)
from benchmarks.serve_vs_peers import (
    _GRPC_INFER,
    BATCH_CONCURRENCY,
    _rows,
    grpc_once,
    grpc_request,
    v2_binary,
    v2_json,
)
from benchmarks.serve_vs_peers import in_process as in_process_rates

SIZES = (1000, 10_000)
_REPLY_HEADERS = ("content-type", "inference-header-content-length")


@dataclass
class Load:
    """One protocol and batch size: what to send, and how to send it to either server."""

    protocol: str
    size: int
    request: Path
    headers: dict[str, str]
    runs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per server, (requests/s, server CPU ms per request) of each round."""

    @property
    def label(self) -> str:
        return f"{self.size} rows, {self.protocol}"


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    target: str


def _start_ours(release: Path, model: str, workers: int, scratch: Path) -> Server:
    http_port, grpc_port = _free_port(), _free_port()
    flags = ("--grpc-port", str(grpc_port), "--workers", str(workers))
    proc = launch_ours(release, *flags)(http_port, scratch / "ours.log")
    url = f"http://127.0.0.1:{http_port}/v2/models/{model}/infer"
    seconds = _first_answer(url, v2_json(_rows(release, 1)[0]), proc, time.monotonic(), 120)
    print(f"ours: answering after {seconds:.1f}s", flush=True)
    return Server("ours", proc, url, f"127.0.0.1:{grpc_port}")


def _start_bare(load: Load, reply: Path, headers: dict[str, str], processes: int, scratch: Path) -> Server:
    port = _free_port()
    protocol = "grpc" if load.protocol == "grpc" else "http"
    command = [sys.executable, "-m", "benchmarks.bare_transports", protocol, "--port", str(port)]
    command += ["--reply", str(reply), "--processes", str(processes)]
    command += [f"--header={name}={value}" for name, value in headers.items()]
    with (scratch / f"bare-{protocol}-{load.size}.log").open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, target = f"http://127.0.0.1:{port}/v2/models/m/infer", f"127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"the bare {protocol} server exited with {proc.returncode}: see {scratch}")
        try:
            _send(load, url, target)
            return Server("bare", proc, url, target)
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"the bare {protocol} server never answered")


def _send(load: Load, url: str, target: str) -> tuple[bytes, dict[str, str]]:
    """One request of `load`: the reply's body and the headers the bare server must copy."""
    if load.protocol == "grpc":
        return grpc_once(target, load.request.read_bytes()), {}
    response = httpx.post(url, content=load.request.read_bytes(), headers=load.headers, timeout=60)
    response.raise_for_status()
    return response.content, {k: response.headers[k] for k in _REPLY_HEADERS if k in response.headers}


def _rate(server: Server, load: Load, args: argparse.Namespace) -> float:
    """Requests per second of one run of `load` on `server`; a failed request stops the run."""
    if load.protocol == "grpc":
        ghz = (args.ghz, args.protoset, _GRPC_INFER)
        rate, errors = run_ghz(*ghz, server.target, load.request, BATCH_CONCURRENCY, args.duration)
    else:
        result = run_wrk(server.url, load.request, BATCH_CONCURRENCY, args.duration, load.headers, 30)
        rate, errors = result.rps, result.errors
    if errors:
        raise RuntimeError(f"{server.name} failed {errors} requests of {load.label}")
    return rate


def _measure(load: Load, servers: tuple[Server, Server], args: argparse.Namespace) -> None:
    """--rounds runs of `load` on both servers, alternating which goes first."""
    for round_ in range(args.rounds):
        for server in servers if round_ % 2 == 0 else servers[::-1]:
            before = tree_cpu_seconds(server.proc.pid)
            rate = _rate(server, load, args)
            cpu_ms = cpu_ms_per_request(server.proc.pid, before, rate * args.duration)
            load.runs.setdefault(server.name, []).append((rate, cpu_ms))
        rate, cpu_ms = load.runs["ours"][-1]
        print(
            f"{load.label}, round {round_ + 1}: ours {rate * load.size:,.0f} rows/s, "
            f"{cpu_ms:.2f} ms CPU/request",
            flush=True,
        )


def _loads(release: Path, model: str, scratch: Path) -> list[Load]:
    rows = _rows(release, max(SIZES))[0]
    loads = []
    for size in SIZES:
        body, head = v2_binary(rows[:size])
        (scratch / f"binary-{size}.bin").write_bytes(body)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(head)}
        loads.append(Load("binary", size, scratch / f"binary-{size}.bin", headers))
        (scratch / f"grpc-{size}.pb").write_bytes(grpc_request(model, rows[:size]))
        loads.append(Load("grpc", size, scratch / f"grpc-{size}.pb", {}))
    return loads


def report(loads: list[Load], runtime_rates: dict[str, float]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    print("\n| load | ours rows/s | bare rows/s | ours / bare | CPU ms/req, ours | CPU ms/req, bare "
          "| in-process runtime rows/s | ours / in-process | bare / in-process |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for load in loads:
        ours, bare = (
            [statistics.median(r[i] for r in load.runs[name]) for i in (0, 1)] for name in ("ours", "bare")
        )
        runtime = runtime_rates[f"runtime-{load.size}"]
        row = {
            "ours_rows_per_s": ours[0] * load.size,
            "bare_rows_per_s": bare[0] * load.size,
            "ours_cpu_ms": ours[1],
            "bare_cpu_ms": bare[1],
            "runtime_rows_per_s": runtime,
        }
        table[load.label] = row
        print(
            f"| {load.label} | {row['ours_rows_per_s']:,.0f} | {row['bare_rows_per_s']:,.0f} "
            f"| {ours[0] / bare[0]:.2f}x | {ours[1]:.2f} | {bare[1]:.2f} | {runtime:,.0f} "
            f"| {row['ours_rows_per_s'] / runtime:.2f}x | {row['bare_rows_per_s'] / runtime:.2f}x |"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODEL_NAMES), default="logistic_regression")
    parser.add_argument("--workers", type=int, default=1, help="processes of ours, and of each bare server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per figure")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    args.ghz = ensure_ghz()
    with tempfile.TemporaryDirectory(prefix="serve-vs-transport-") as tmp:
        scratch = Path(tmp)
        args.protoset = write_protoset(scratch / "oip.protoset")
        print("training the release", flush=True)
        release = Path(getattr(train_bench_models(scratch / "models"), args.model))
        model = MODEL_NAMES[args.model]
        loads = _loads(release, model, scratch)
        X, columns = _rows(release, max(SIZES))
        runtime_rates = in_process_rates(release, X, columns)
        ours = _start_ours(release, model, args.workers, scratch)
        try:
            for load in loads:
                reply, headers = _send(load, ours.url, ours.target)
                (scratch / f"reply-{load.label}").write_bytes(reply)
                bare = _start_bare(load, scratch / f"reply-{load.label}", headers, args.workers, scratch)
                try:
                    _measure(load, (ours, bare), args)
                finally:
                    _stop(bare.proc)
        finally:
            _stop(ours.proc)
        table = report(loads, runtime_rates)
    if args.json_out:
        settings = {key: getattr(args, key) for key in ("model", "workers", "rounds", "duration")}
        runs = {load.label: load.runs for load in loads}
        args.json_out.write_text(json.dumps({"settings": settings, "table": table, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
