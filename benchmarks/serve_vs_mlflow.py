"""Benchmark: our model server against `mlflow models serve`, same models, same load generator, same run.

    .venv/bin/python -m benchmarks.serve_vs_mlflow [--duration 5] [--runs 3] [--json-out FILE]

Trains the two reference releases (logistic regression on 20 features, 100-tree random
forest on breast cancer) into a scratch registry, then for each model starts each server in
turn (one worker, loopback), drives it with wrk and prints medians and ratios: single-row
throughput and p50/p99 at concurrency 1, 8 and 32; rows per second for batches of 100 and
1,000; seconds from process start to the first successful prediction; resident memory of
the whole process tree. It also times in-process scikit-learn `predict` on the 1,000-row
batch. Not a test: it asserts nothing and only reports. Needs `wrk` on PATH (Debian: wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serve_models import train_bench_models

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
BATCHES = (100, 1000)
BATCH_CONCURRENCY = 4


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class ServerFigures:
    start_s: float = 0.0
    rss_mb: float = 0.0
    single: dict[int, WrkResult] = field(default_factory=dict)
    batch_rows_per_s: dict[int, float] = field(default_factory=dict)
    batch_errors: int = 0
    runtime: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (mlflow serves from a child, ours from workers)."""
    pids, found = [pid], []
    while pids:
        current = pids.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    total = 0
    for current in tree_pids(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            continue
    return total / 1024


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its living descendants so far."""
    ticks = 0
    for current in tree_pids(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_ms_per_request(pid: int, cpu_before: float, requests: float) -> float:
    """Milliseconds of the process tree's CPU per request since `cpu_before` (its
    `tree_cpu_seconds` when the requests started)."""
    return 1000 * (tree_cpu_seconds(pid) - cpu_before) / max(requests, 1)


def _body(columns: list[str], rows: list[list[float]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()


def example_rows(release: Path) -> tuple[dict[str, Any], list[str], list[list[float]]]:
    """The release's release.json, and the columns and rows of its model's serving input example."""
    meta = json.loads((release / "release.json").read_text())
    example = json.loads((release / "model" / "serving_input_example.json").read_text())["dataframe_split"]
    return meta, list(meta["feature_names"]), example["data"]


def write_bodies(
    scratch: Path, name: str, columns: list[str], rows: list[list[float]], sizes: tuple[int, ...]
) -> dict[int, Path]:
    """Per size, a JSON request of that many rows (`rows` repeated) in scratch/<name>-<size>.json."""
    paths = {}
    for size in sizes:
        paths[size] = scratch / f"{name}-{size}.json"
        paths[size].write_bytes(_body(columns, [rows[i % len(rows)] for i in range(size)]))
    return paths


def _parse_duration(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(
    url: str,
    body_file: Path,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    request_timeout_s: int = 10,
) -> WrkResult:
    """POST `body_file` to `url` with wrk for `seconds`: requests/s, p50, p99 and errors."""
    script = body_file.with_suffix(".lua")
    lines = [f'local f = io.open("{body_file}", "rb")', 'wrk.method = "POST"']
    for key, value in (headers or {"Content-Type": "application/json"}).items():
        lines.append(f'wrk.headers["{key}"] = "{value}"')
    script.write_text("\n".join([*lines, 'wrk.body = f:read("*all")', "f:close()"]) + "\n")
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(connections, 2)}",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--timeout",
            f"{request_timeout_s}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + request_timeout_s + 60,
        check=True,
    ).stdout

    def grab(pattern: str) -> str:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return match.group(1)

    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in match.groups())
    return WrkResult(
        float(grab(r"Requests/sec:\s+([\d.]+)")),
        _parse_duration(grab(r"^\s+50%\s+(\S+)")),
        _parse_duration(grab(r"^\s+99%\s+(\S+)")),
        errors,
    )


def _median(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


Launcher = Callable[[int, Path], subprocess.Popen[bytes]]


def launch_ours(release: Path, *flags: str, tree: Path = REPO) -> Launcher:
    """Our server on `release`, with `flags` (e.g. "--grpc-port", "0") after the model and address,
    run from the code in `tree` (another revision's checkout, for an A/B)."""

    def start(port: int, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "model.server", "--model-uri", str(release)]  # noqa: RUF005
                + ["--host", "127.0.0.1", "--port", str(port), *flags],
                cwd=tree,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return start


def launch_mlflow(release: Path) -> Launcher:
    bindir = Path(sys.executable).parent

    def start(port: int, log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
        with log.open("ab") as out:
            return subprocess.Popen(
                [str(bindir / "mlflow"), "models", "serve", "-m", str(release / "model")]  # noqa: RUF005
                + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                cwd=log.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return start


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _first_answer(
    url: str, body: bytes, proc: subprocess.Popen[bytes], started: float, limit: float
) -> float:
    """Seconds from process start to the first 200 to a JSON POST of `body` to `url`."""
    with httpx.Client(timeout=60) as http:
        while time.monotonic() - started < limit:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before answering")
            try:
                response = http.post(url, content=body, headers={"content-type": "application/json"})
                if response.status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"no answer within {limit}s")


def start_answering(launcher: Launcher, body: bytes, log: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    """Start a server on a free port: the process, its base URL and the seconds until it answered
    `body` on /invocations. A server that exits or stays silent for 300 s is stopped, the error raised."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = launcher(port, log)
    try:
        return proc, url, _first_answer(f"{url}/invocations", body, proc, started, 300)
    except BaseException:
        _stop(proc)
        raise


def measure(
    name: str,
    launcher: Launcher,
    columns: list[str],
    rows: list[list[float]],
    scratch: Path,
    args: argparse.Namespace,
) -> ServerFigures:
    figures = ServerFigures()
    bodies = write_bodies(scratch, name, columns, rows, (1, *BATCHES))
    single = bodies[1]
    log = scratch / f"{name}.log"
    starts = []
    proc = None
    url = ""
    for attempt in range(args.start_runs):
        if proc is not None:
            _stop(proc)
        proc, url, seconds = start_answering(launcher, single.read_bytes(), log)
        starts.append(seconds)
        print(f"  {name}: first answer after {starts[-1]:.2f}s (start {attempt + 1})", flush=True)
    assert proc is not None
    figures.start_s = statistics.median(starts)
    try:
        try:
            figures.runtime = httpx.get(url + "/version", timeout=5).json().get("runtime", "")
        except (httpx.HTTPError, ValueError):
            figures.runtime = ""
        run_wrk(url + "/invocations", single, 8, 2)  # warm-up
        for connections in CONCURRENCY:
            results = [
                run_wrk(url + "/invocations", single, connections, args.duration) for _ in range(args.runs)
            ]
            figures.single[connections] = _median(results)
            r = figures.single[connections]
            print(
                f"  {name}: c={connections:<2} {r.rps:9.1f} req/s  p50 {r.p50_ms:8.2f} ms  "
                f"p99 {r.p99_ms:8.2f} ms  errors {r.errors}",
                flush=True,
            )
        for size in BATCHES:
            results = [
                run_wrk(url + "/invocations", bodies[size], BATCH_CONCURRENCY, args.duration)
                for _ in range(args.runs)
            ]
            figures.batch_rows_per_s[size] = statistics.median(r.rps for r in results) * size
            figures.batch_errors += sum(r.errors for r in results)
            print(f"  {name}: batch {size:<5} {figures.batch_rows_per_s[size]:10.0f} rows/s", flush=True)
        figures.rss_mb = _tree_rss_mb(proc.pid)
        print(f"  {name}: resident memory {figures.rss_mb:.0f} MB", flush=True)
    finally:
        _stop(proc)
    return figures


def sklearn_rows_per_s(release: Path, columns: list[str], rows: list[list[float]], size: int) -> float:
    import pandas as pd

    from model.artifact import ReleaseMetadata, load_sklearn_model

    meta = ReleaseMetadata.from_json((release / "release.json").read_text())
    pipeline = load_sklearn_model(release / "model", meta.estimator, meta.task, meta.model_sha256)
    frame = pd.DataFrame([rows[i % len(rows)] for i in range(size)], columns=columns)
    pipeline.predict(frame)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        pipeline.predict(frame)
        times.append(time.perf_counter() - started)
    return size / statistics.median(times)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per figure (median)")
    parser.add_argument("--start-runs", type=int, default=3, help="process starts per server (median)")
    parser.add_argument("--models", default="logistic_regression,random_forest")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)")
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    print(f"training the benchmark models under {scratch}", flush=True)
    models = asdict(train_bench_models(scratch / "models"))
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "duration_s": args.duration,
        "runs": args.runs,
        "models": {},
    }
    for key in args.models.split(","):
        release = Path(models[key])
        meta, columns, rows = example_rows(release)
        print(f"\n== {key} ({meta['estimator']}, {len(columns)} features)", flush=True)
        ours = measure(f"ours-{key}", launch_ours(release), columns, rows, scratch, args)
        theirs = measure(f"mlflow-{key}", launch_mlflow(release), columns, rows, scratch, args)
        in_process = sklearn_rows_per_s(release, columns, rows, 1000)
        report["models"][key] = {
            "ours": asdict(ours),
            "mlflow": asdict(theirs),
            "sklearn_predict_rows_per_s_1000": in_process,
            "ratios": {
                **{f"rps_c{c}": _ratio(ours.single[c].rps, theirs.single[c].rps) for c in CONCURRENCY},
                **{f"p50_c{c}": _ratio(theirs.single[c].p50_ms, ours.single[c].p50_ms) for c in CONCURRENCY},
                **{f"p99_c{c}": _ratio(theirs.single[c].p99_ms, ours.single[c].p99_ms) for c in CONCURRENCY},
                **{
                    f"rows_b{b}": _ratio(ours.batch_rows_per_s[b], theirs.batch_rows_per_s[b])
                    for b in BATCHES
                },
                "rows_b1000_vs_sklearn_predict": _ratio(ours.batch_rows_per_s[1000], in_process),
                "start": _ratio(theirs.start_s, ours.start_s),
                "memory": _ratio(theirs.rss_mb, ours.rss_mb),
            },
        }
    print("\n== ratios (ours vs mlflow models serve; > 1 means ours is better)")
    for key, figures in report["models"].items():
        print(f"-- {key}: runtime {figures['ours']['runtime']}")
        for name, value in figures["ratios"].items():
            print(f"   {name:34s} {value:8.1f}x")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
