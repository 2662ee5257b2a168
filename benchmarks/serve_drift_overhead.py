"""Benchmark: what drift accounting costs the model server, on against off in the same run.

    .venv/bin/python -m benchmarks.serve_drift_overhead [--duration 5] [--runs 5] [--json-out FILE]

Trains serve_vs_mlflow's two reference releases (logistic regression on 20 features, random
forest on breast cancer's 30), starts two servers per model side by side, one with the
default drift window (5,000 rows) and one with `--drift-window-rows 0`, and drives them
with serve_vs_mlflow's wrk runner in alternating runs (off, on, then on, off, ...) so that
both see the same machine load: single-row requests at concurrency 1, 8 and 32, and batches of 100 rows
at concurrency 4. Per run it also reads the server process's CPU time (/proc/<pid>/stat), so
besides throughput and p99 it reports CPU microseconds per request: on a shared machine the
wall-clock figures move with other jobs' load, CPU per request less. Prints medians and
on/off ratios (target: single-row throughput on >= 0.9 of off), then checks that the window
filled and that the server with window 0 exports no drift series. Last, both apps in this
process: CPU microseconds per request through the ASGI callable, no network, alternating
blocks, and the time spent inside the monitor's record and fold per request: the cost of the
drift accounting itself, which the machine's load barely moves. Not a test. Needs `wrk`
on PATH (Debian: wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serve_models import train_bench_models
from benchmarks.serve_vs_mlflow import (
    WrkResult,
    _median,
    _stop,
    example_rows,
    launch_ours,
    run_wrk,
    start_answering,
    write_bodies,
)

CONCURRENCY = (1, 8, 32)
BATCH_ROWS = 100
BATCH_CONCURRENCY = 4
IN_PROCESS_REQUESTS = 2000


def _window_rows(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    for line in metrics.splitlines():
        if line.startswith("mlops_server_drift_window_rows "):
            return float(line.split()[1])
    return -1.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass(frozen=True)
class Run:
    wrk: WrkResult
    cpu_us_per_request: float


def _run(server: tuple[subprocess.Popen[bytes], str], body: Path, connections: int, seconds: int) -> Run:
    proc, url = server
    before = _cpu_seconds(proc.pid)
    result = run_wrk(f"{url}/invocations", body, connections, seconds)
    used = _cpu_seconds(proc.pid) - before
    return Run(result, used / max(result.rps * seconds, 1.0) * 1e6)


def _summary(runs: list[Run]) -> dict[str, float]:
    wrk = _median([r.wrk for r in runs])
    cpu = statistics.median(r.cpu_us_per_request for r in runs)
    return {"rps": wrk.rps, "p50_ms": wrk.p50_ms, "p99_ms": wrk.p99_ms, "errors": wrk.errors, "cpu_us": cpu}


def _time_accounting(app: Any) -> list[float]:
    """Wrap the app's drift monitor so that the seconds spent in record and fold add up in a list."""
    spent: list[float] = []
    monitor = app.drift
    assert monitor is not None, "the app with a window has no drift monitor"
    for name in ("record", "fold"):
        original = getattr(monitor, name)

        def timed(*args: Any, _original: Any = original) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args)
            finally:
                spent.append(time.perf_counter() - started)

        setattr(monitor, name, timed)
    return spent


def in_process(release: Path, bodies: dict[str, bytes], rounds: int = 12) -> dict[str, dict[str, float]]:
    """CPU microseconds per request through the app's ASGI callable (no network, no wrk): both
    apps in this process, alternating blocks of requests, medians of `rounds` blocks."""
    import asyncio

    from model.server import ServerSettings, create_app

    async def nothing(_message: Any) -> None:
        return None

    async def run() -> dict[str, dict[str, float]]:
        apps = {}
        for mode, window_rows in (("off", 0), ("on", 5000)):
            apps[mode] = create_app(ServerSettings(str(release), grpc_port=0, drift_window_rows=window_rows))
            assert await apps[mode].wait_loaded(120)
        accounting = _time_accounting(apps["on"])
        figures = {}
        for name, body in bodies.items():
            scope = {
                "type": "http",
                "path": "/invocations",
                "method": "POST",
                "query_string": b"",
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }

            async def receive(body: bytes = body) -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            blocks: dict[str, list[float]] = {"off": [], "on": []}
            accounting.clear()
            for i in range(rounds):
                for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    started = time.process_time()
                    for _ in range(IN_PROCESS_REQUESTS):
                        await apps[mode](scope, receive, nothing)
                    blocks[mode].append((time.process_time() - started) / IN_PROCESS_REQUESTS * 1e6)
            figures[name] = {mode: statistics.median(values) for mode, values in blocks.items()}
            figures[name]["accounting"] = sum(accounting) / (rounds * IN_PROCESS_REQUESTS) * 1e6
        for app in apps.values():
            await app.close()
        return figures

    return asyncio.run(run())


def measure(release: Path, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    meta, columns, rows = example_rows(release)
    bodies = write_bodies(scratch, meta["model_name"], columns, rows, (1, BATCH_ROWS))
    single, batch = bodies[1], bodies[BATCH_ROWS]
    loads: dict[str, tuple[Path, int]] = {f"single c={c}": (single, c) for c in CONCURRENCY}
    loads[f"batch {BATCH_ROWS} c={BATCH_CONCURRENCY}"] = (batch, BATCH_CONCURRENCY)
    figures: dict[str, dict[str, dict[str, float]]] = {}
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for mode, window_rows in (("off", 0), ("on", 5000)):
            log = scratch / f"{meta['model_name']}-{mode}.log"
            # gRPC off: two servers side by side would both want its default port.
            launcher = launch_ours(release, "--drift-window-rows", str(window_rows), "--grpc-port", "0")
            proc, url, _ = start_answering(launcher, single.read_bytes(), log)
            servers[mode] = (proc, url)
        for _, url in servers.values():
            run_wrk(f"{url}/invocations", single, 8, 2)  # warm-up
        for name, (body, connections) in loads.items():
            runs: dict[str, list[Run]] = {"off": [], "on": []}
            for i in range(args.runs):
                for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    runs[mode].append(_run(servers[mode], body, connections, args.duration))
            figures[name] = {mode: _summary(r) for mode, r in runs.items()}
            off, on = figures[name]["off"], figures[name]["on"]
            line = "  ".join(
                f"{mode} {f['rps']:7.0f} req/s p99 {f['p99_ms']:6.2f} ms {f['cpu_us']:5.0f} us CPU"
                for mode, f in (("off", off), ("on", on))
            )
            print(f"  {name:14} {line}", flush=True)
        window = _window_rows(servers["on"][1])
        assert _window_rows(servers["off"][1]) == -1.0, "the server with window 0 exported drift metrics"
    finally:
        for proc, _ in servers.values():
            _stop(proc)
    app_cpu = in_process(release, {"single": single.read_bytes(), f"batch {BATCH_ROWS}": batch.read_bytes()})
    for name, modes in app_cpu.items():
        print(
            f"  in-process {name:9} CPU us/request: off {modes['off']:6.1f}  on {modes['on']:6.1f}  "
            f"(off/on {modes['off'] / modes['on']:.3f}); inside record+fold {modes['accounting']:.2f} us",
            flush=True,
        )
    return {"window_rows_after": window, "figures": figures, "in_process_cpu_us": app_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=5, help="wrk runs per figure and mode (median)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)")
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="drift-overhead-"))
    print(f"training the benchmark models under {scratch}; load {os.getloadavg()[0]:.1f}", flush=True)
    models = asdict(train_bench_models(scratch / "models"))
    report = {}
    for key, folder in models.items():
        print(f"\n== {key}", flush=True)
        report[key] = measure(Path(folder), scratch, args)
        print(f"  drift window after the runs: {report[key]['window_rows_after']:.0f} rows", flush=True)
    print(
        "\n| model | load | req/s off | req/s on | on/off | p99 ms off | p99 ms on "
        "| CPU us/req off | CPU us/req on | off/on CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, figures in report.items():
        for name, modes in figures["figures"].items():
            off, on = modes["off"], modes["on"]
            print(
                f"| {key} | {name} | {off['rps']:.0f} | {on['rps']:.0f} | {on['rps'] / off['rps']:.3f} "
                f"| {off['p99_ms']:.2f} | {on['p99_ms']:.2f} | {off['cpu_us']:.0f} | {on['cpu_us']:.0f} "
                f"| {off['cpu_us'] / on['cpu_us']:.3f} |"
            )
    print("\n| model | in-process request | CPU us off | CPU us on | off/on | us in record+fold |")
    print("|---|---|---|---|---|---|")
    for key, figures in report.items():
        for name, modes in figures["in_process_cpu_us"].items():
            off, on, inside = modes["off"], modes["on"], modes["accounting"]
            print(f"| {key} | {name} | {off:.1f} | {on:.1f} | {off / on:.3f} | {inside:.2f} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
