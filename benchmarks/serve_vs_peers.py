"""Benchmark: our model server against Seldon MLServer and KServe's model server, same models, same run.

    .venv/bin/python -m benchmarks.serve_vs_peers [--duration 5] [--runs 3] [--json-out FILE]

Trains the reference releases (logistic regression on 20 features; 100-tree random forest on
breast cancer; for start-up also a 300-tree forest and a gradient boosting model), installs
each peer into its own environment (`benchmarks/peers.py`), and for each model starts each
server on loopback: ours, MLServer and KServe each as a user first starts them and with their
best settings for 2 cores. Before timing, every server must answer exactly what scikit-learn
answers on a 1,000-row batch over each protocol it is timed on (a protocol that
fails the check is reported, not timed). Then, all with the Open Inference Protocol:

- single-row JSON requests at concurrency 1, 8 and 32 (wrk): requests/s, p50, p99;
- batches of 1,000 and 10,000 rows at concurrency 4: JSON (wrk), binary tensors over HTTP
  (wrk, where the server takes them) and gRPC with raw tensors (ghz, `benchmarks/ghz.py`);
- seconds from process start to the first correct answer (median of --start-runs), and the
  resident memory of the idle process tree right after it;
- the in-process floor: scikit-learn `predict` and our compiled runtime on the same batches.

All of a model's servers stay up while they are timed, and each load runs on every server in
turn, --runs times in rotating order (`time_loads`): this machine's speed moves by 2x within
minutes, and timing one server after another had put minutes between the figures compared.

Ratios are against the best peer per column. Not a test: it asserts nothing, only reports.
Needs `wrk` on PATH (Debian: wrk) and Go (ghz is built once); the peers' first install takes a
few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.ghz import ensure_ghz, run_ghz, write_protoset
from benchmarks.peers import (
    PEER_SETTINGS,
    PeerLaunch,
    ensure_peer_env,
    export_joblib,
    launch_kserve,
    launch_mlserver,
    peer_versions,
)
from benchmarks.serve_vs_mlflow import (
    WrkResult,
    _first_answer,
    _free_port,
    _median,
    _stop,
    _tree_rss_mb,
    example_rows,
    run_wrk,
)
from benchmarks.serve_vs_mlflow import launch_ours as launch_ours_http

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
BATCHES = (1000, 10000)
BATCH_CONCURRENCY = 4
MODELS = ("logistic_regression", "random_forest")
START_ONLY = ("random_forest_300", "hist_gradient_boosting")
_GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Figures:
    settings: str = ""
    start_s: float = 0.0
    idle_mb: float = 0.0
    single: dict[int, WrkResult] = field(default_factory=dict)
    rows_per_s: dict[str, float] = field(default_factory=dict)
    """By "<protocol>-<rows>": json-1000, binary-1000, grpc-1000, ..."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Protocols not timed, and why (unsupported, or a wrong answer)."""
    errors: int = 0


# -- request bodies ------------------------------------------------------------------------


def v2_json(rows: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_binary(rows: np.ndarray) -> tuple[bytes, int]:
    """A binary data extension body (raw inputs, raw outputs asked for) and its JSON header length."""
    raw = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    return head + raw, len(head)


JSON_HEADERS = {"Content-Type": "application/json"}


def write_http_bodies(rows: np.ndarray, folder: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    """V2 JSON and binary-tensor bodies of `rows`, written to `folder`: by "json-<rows>" and
    "binary-<rows>", the file and the headers to send it with."""
    size = len(rows)
    json_path, binary_path = folder / f"json-{size}.json", folder / f"binary-{size}.bin"
    json_path.write_bytes(v2_json(rows))
    body, head = v2_binary(rows)
    binary_path.write_bytes(body)
    binary_headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(head),
    }
    return {f"json-{size}": (json_path, JSON_HEADERS), f"binary-{size}": (binary_path, binary_headers)}


def grpc_request(model_name: str, rows: np.ndarray) -> bytes:
    from open_inference.grpc import protocol as pb

    request = pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f8").tobytes())
    return bytes(request.SerializeToString())


# -- answers -------------------------------------------------------------------------------

_NUMPY = {"INT64": "<i8", "INT32": "<i4", "FP64": "<f8", "FP32": "<f4", "BOOL": "?", "UINT64": "<u8"}


def labels_from_http(response: httpx.Response) -> list[Any]:
    header = response.headers.get("inference-header-content-length")
    if header is None:
        return list(np.ravel(response.json()["outputs"][0]["data"]))
    length = int(header)
    output = json.loads(response.content[:length])["outputs"][0]
    size = output.get("parameters", {}).get("binary_data_size")
    if size is None:
        return list(np.ravel(output["data"]))
    return np.frombuffer(response.content[length : length + size], dtype=_NUMPY[output["datatype"]]).tolist()


def labels_from_grpc(raw: bytes) -> list[Any]:
    from open_inference.grpc import protocol as pb

    response = pb.ModelInferResponse.FromString(raw)
    output = response.outputs[0]
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], dtype=_NUMPY[output.datatype]).tolist()
    contents = output.contents
    for name in ("int64_contents", "int_contents", "fp64_contents", "fp32_contents", "bool_contents"):
        if len(getattr(contents, name)):
            return list(getattr(contents, name))
    return []


# -- load generators -----------------------------------------------------------------------


def grpc_once(target: str, request: bytes) -> bytes:
    import grpc

    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(target, options=options) as channel:
        response: bytes = channel.unary_unary(_GRPC_INFER)(request, timeout=60)
        return response


# -- one server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    launch: PeerLaunch
    settings: str


@dataclass
class Running:
    """A started server that answered correctly: where it listens and the loads it is timed on."""

    server: Server
    proc: subprocess.Popen[bytes]
    url: str
    target: str
    single: Path
    plans: dict[str, tuple[str, Path, dict[str, str]] | bytes]
    """By load key (json-1000, grpc-10000, ...): the HTTP URL, body and headers, or the gRPC request."""
    figures: Figures


def start(
    server: Server, X: np.ndarray, want: dict[int, list[Any]], scratch: Path, args: argparse.Namespace
) -> Running:
    """Start `server` --start-runs times (timing each to its first answer), measure it idle, and
    check every protocol's answers against scikit-learn; the last start stays up."""
    figures = Figures(settings=server.settings)
    name, model = server.name, server.launch.model_name
    bodies = scratch / f"{name}-{model}"
    bodies.mkdir(parents=True, exist_ok=True)
    single = bodies / "single.json"
    single.write_bytes(v2_json(X[:1]))
    log = scratch / f"{name}-{model}.log"
    starts: list[float] = []
    proc = None
    http_port = grpc_port = 0
    try:
        for attempt in range(args.start_runs):
            if proc is not None:
                _stop(proc)
            http_port, grpc_port = _free_port(), _free_port()
            started = time.monotonic()
            proc = server.launch.start(http_port, grpc_port, log)
            url = f"http://127.0.0.1:{http_port}/v2/models/{model}/infer"
            starts.append(_first_answer(url, single.read_bytes(), proc, started, 300))
            print(f"  {name}: first answer after {starts[-1]:.2f}s (start {attempt + 1})", flush=True)
        assert proc is not None
        figures.start_s = statistics.median(starts)
        time.sleep(1.0)
        figures.idle_mb = _tree_rss_mb(proc.pid)
        print(f"  {name}: idle resident memory {figures.idle_mb:.0f} MB", flush=True)
        running = Running(server, proc, url, f"127.0.0.1:{grpc_port}", single, {}, figures)
        _check(running, X, want, bodies)
        run_wrk(url, single, 8, 2, JSON_HEADERS, 20)  # warm-up
    except BaseException:
        if proc is not None:
            _stop(proc)
        raise
    return running


def _check(running: Running, X: np.ndarray, want: dict[int, list[Any]], bodies: Path) -> None:
    """Plan the batch loads, and drop each protocol that does not answer what scikit-learn answers."""
    figures, plans = running.figures, running.plans
    for size in BATCHES:
        for key, (path, headers) in write_http_bodies(X[:size], bodies).items():
            if key.startswith("binary") and not running.server.launch.binary_http:
                figures.skipped[key] = "no binary data extension over HTTP"
            else:
                plans[key] = (running.url, path, headers)
        plans[f"grpc-{size}"] = grpc_request(running.server.launch.model_name, X[:size])
    for key, plan in list(plans.items()):
        size = int(key.split("-")[1])
        try:
            if isinstance(plan, bytes):
                got = labels_from_grpc(grpc_once(running.target, plan))
            else:
                response = httpx.post(plan[0], content=plan[1].read_bytes(), headers=plan[2], timeout=120)
                response.raise_for_status()
                got = labels_from_http(response)
        except Exception as exc:
            figures.skipped[key] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
            del plans[key]
            continue
        if got != want[size]:
            figures.skipped[key] = "answers differ from scikit-learn"
            del plans[key]
    name = running.server.name
    print(f"  {name}: checked {', '.join(plans)}; skipped {figures.skipped or 'none'}", flush=True)
    if "json-1000" not in plans:
        raise RuntimeError(f"{name} does not answer V2 JSON correctly: {figures.skipped}")


def _run_load(running: Running, key: str, args: argparse.Namespace) -> WrkResult:
    """One run of one load: "single-<concurrency>" (single-row JSON) or a batch plan's key. A gRPC
    run comes back as a WrkResult with only its rate and errors."""
    if key.startswith("single-"):
        connections = int(key.split("-")[1])
        return run_wrk(running.url, running.single, connections, args.duration, JSON_HEADERS, 20)
    plan = running.plans[key]
    if isinstance(plan, bytes):
        request = running.single.parent / f"{key}.pb"
        request.write_bytes(plan)
        rps, errors = run_ghz(
            args.ghz, args.protoset, _GRPC_INFER, running.target, request, BATCH_CONCURRENCY, args.duration
        )
        return WrkResult(rps=rps, p50_ms=0.0, p99_ms=0.0, errors=errors)
    return run_wrk(plan[0], plan[1], BATCH_CONCURRENCY, args.duration, plan[2], 20)


def time_loads(servers: list[Running], args: argparse.Namespace) -> None:
    """Every load on every server, run after run in rotating order: this machine's speed moves by
    2x within minutes, so each run of a load meets all servers within the same half minute
    (timing one server after another put minutes between them). Figures are medians of --runs."""
    keys = [f"single-{c}" for c in CONCURRENCY]
    keys += [k for k in dict.fromkeys(k for r in servers for k in r.plans)]
    for key in keys:
        taking = [r for r in servers if key.startswith("single-") or key in r.plans]
        results: dict[str, list[WrkResult]] = {r.server.name: [] for r in taking}
        for run in range(args.runs):
            shift = run % len(taking)
            for r in taking[shift:] + taking[:shift]:
                results[r.server.name].append(_run_load(r, key, args))
        for r in taking:
            loads, figures = results[r.server.name], r.figures
            figures.errors += sum(x.errors for x in loads)
            if key.startswith("single-"):
                single = figures.single[int(key.split("-")[1])] = _median(loads)
                line = f"{single.rps:9.1f} req/s  p50 {single.p50_ms:8.2f} ms  p99 {single.p99_ms:8.2f} ms"
            else:
                figures.rows_per_s[key] = statistics.median(x.rps for x in loads) * int(key.split("-")[1])
                line = f"{figures.rows_per_s[key]:12.0f} rows/s"
            print(f"  {r.server.name}: {key:12s} {line}  errors {sum(x.errors for x in loads)}", flush=True)


def start_only(server: Server, X: np.ndarray, scratch: Path, runs: int) -> float:
    """Median seconds from process start to the first answer (for the start-up-only models)."""
    body = v2_json(X[:1])
    log = scratch / f"{server.name}-{server.launch.model_name}.log"
    starts = []
    for _ in range(runs):
        http_port, grpc_port = _free_port(), _free_port()
        started = time.monotonic()
        proc = server.launch.start(http_port, grpc_port, log)
        try:
            url = f"http://127.0.0.1:{http_port}/v2/models/{server.launch.model_name}/infer"
            starts.append(_first_answer(url, body, proc, started, 300))
        finally:
            _stop(proc)
    return statistics.median(starts)


OURS = {
    "ours": ((), "defaults: one process"),
    "ours-tuned": (("--workers", "2"), "--workers 2 (one process per core)"),
}
"""Our server as a user first starts it, and with one worker process per core (2 here): its
flags and what they change."""


def launch_ours(release: Path, model_name: str, *flags: str) -> PeerLaunch:
    def start(http_port: int, grpc_port: int, log: Path) -> subprocess.Popen[bytes]:
        return launch_ours_http(release, "--grpc-port", str(grpc_port), *flags)(http_port, log)

    return PeerLaunch("ours", model_name, start, binary_http=True)


# -- in-process floor ----------------------------------------------------------------------


def _rows_per_s(predict: Any, batch: Any, size: int) -> float:
    predict(batch)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - started)
    return size / statistics.median(times)


def in_process(release: Path, X: np.ndarray, columns: list[str]) -> dict[str, float]:
    import pandas as pd

    from model.artifact import ReleaseMetadata, load_sklearn_model
    from model.runtime_bundle import load_runtime

    meta = ReleaseMetadata.from_json((release / "release.json").read_text())
    pipeline = load_sklearn_model(release / "model", meta.estimator, meta.task, meta.model_sha256)
    choice = load_runtime(release / "model")
    floor = {}
    for size in BATCHES:
        frame = pd.DataFrame(X[:size], columns=columns)
        floor[f"sklearn-{size}"] = _rows_per_s(pipeline.predict, frame, size)
        if choice is not None:
            floor[f"runtime-{size}"] = _rows_per_s(
                choice.runtime.predict, np.ascontiguousarray(X[:size]), size
            )
    return floor


# -- models --------------------------------------------------------------------------------


def train_models(workdir: Path) -> dict[str, Path]:
    """The two measured releases, and the two only started (a 300-tree forest, gradient boosting)."""
    from dataclasses import asdict as as_dict

    from benchmarks.serve_models import train_bench_models
    from model.spec import RegistrySettings, TrainingSpec
    from model.train import train_release

    folders = {key: Path(value) for key, value in as_dict(train_bench_models(workdir)).items()}
    registry = RegistrySettings(
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", artifact_root=str(workdir / "artifacts")
    )
    extra = {
        "random_forest_300": ("bench-rf300", "random_forest", {"n_estimators": 300}),
        "hist_gradient_boosting": ("bench-hgb", "hist_gradient_boosting", {}),
    }
    for key, (name, estimator, params) in extra.items():
        spec = TrainingSpec(
            model_name=name,
            dataset="sklearn:breast_cancer",
            target="target",
            task="classification",
            estimator=estimator,
            params=params,
        )
        folders[key] = Path(train_release(spec, registry, workdir, log=lambda _m: None).model_uri).parent
    return folders


def _rows(release: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """`size` rows drawn (with jitter) from the release's training profile's example rows."""
    _, columns, example = example_rows(release)
    base = np.asarray(example, dtype=np.float64)
    rng = np.random.default_rng(size)
    picks = base[rng.integers(0, len(base), size)]
    jitter = rng.normal(0, np.maximum(base.std(axis=0), 1e-3) / 4, picks.shape)
    return np.round(picks + jitter, 6), columns


def _ratio(ours: float, peer: float, lower_is_better: bool = False) -> float:
    if not ours or not peer:
        return float("nan")
    return peer / ours if lower_is_better else ours / peer


def _servers(
    release: Path,
    model_name: str,
    joblib_path: Path,
    peers: list[str],
    pythons: dict[str, Path],
    scratch: Path,
) -> list[Server]:
    """Ours in both settings, then each peer configuration, on the same model."""
    servers = [
        Server(name, launch_ours(release, model_name, *flags), settings)
        for name, (flags, settings) in OURS.items()
    ]
    for peer in peers:
        kind, tuned = peer.split("-")[0], peer.endswith("-tuned")
        if kind == "mlserver":
            launch = launch_mlserver(pythons[kind], joblib_path, model_name, scratch / "peer-models", tuned)
        else:
            launch = launch_kserve(pythons[kind], joblib_path, model_name, tuned)
        servers.append(Server(peer, launch, PEER_SETTINGS[peer]))
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per load run")
    parser.add_argument("--runs", type=int, default=3, help="load runs per figure (median)")
    parser.add_argument("--start-runs", type=int, default=3, help="process starts per server (median)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--peers", default="mlserver,mlserver-tuned,kserve,kserve-tuned")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)")
    peers = [p for p in args.peers.split(",") if p]
    pythons = {kind: ensure_peer_env(kind) for kind in {p.split("-")[0] for p in peers}}
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="serve-peers-"))
    args.ghz = ensure_ghz()
    args.protoset = write_protoset(scratch / "open_inference.protoset")
    print(f"training the benchmark models under {scratch}", flush=True)
    releases = train_models(scratch / "models")
    from importlib.metadata import version

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "duration_s": args.duration,
        "runs": args.runs,
        "start_runs": args.start_runs,
        "batch_concurrency": BATCH_CONCURRENCY,
        "versions": {
            "ours": {p: version(p) for p in ("scikit-learn", "numpy", "onnxruntime", "uvicorn", "grpcio")},
            **{
                kind: peer_versions(python, (kind, "scikit-learn", "numpy", "uvicorn", "grpcio"))
                for kind, python in pythons.items()
            },
        },
        "settings": {**{name: settings for name, (_, settings) in OURS.items()}, **PEER_SETTINGS},
        "models": {},
        "start_only": {},
    }
    max_rows = max(BATCHES)
    for key in args.models.split(","):
        release = releases[key]
        meta = json.loads((release / "release.json").read_text())
        X, columns = _rows(release, max_rows)
        joblib_path = export_joblib(release, scratch / "peer-models" / key)
        import joblib

        pipeline = joblib.load(joblib_path)
        want = {size: pipeline.predict(X[:size]).tolist() for size in BATCHES}
        print(f"\n== {key} ({meta['estimator']}, {len(columns)} features)", flush=True)
        servers = _servers(release, meta["model_name"], joblib_path, peers, pythons, scratch)
        failed: dict[str, str] = {}
        running: list[Running] = []
        try:
            for server in servers:
                try:
                    running.append(start(server, X, want, scratch, args))
                except Exception as exc:
                    print(f"  {server.name}: FAILED: {exc}", flush=True)
                    failed[server.name] = f"{type(exc).__name__}: {exc}"
            time_loads(running, args)
        finally:
            for r in running:
                _stop(r.proc)
        done = {r.server.name: asdict(r.figures) for r in running}
        figures = {s.name: done.get(s.name) or {"failed": failed[s.name]} for s in servers}
        report["models"][key] = {
            "estimator": meta["estimator"],
            "servers": figures,
            "in_process_rows_per_s": in_process(release, X, columns),
        }
    for key in START_ONLY:
        release = releases[key]
        meta = json.loads((release / "release.json").read_text())
        X, _ = _rows(release, 10)
        joblib_path = export_joblib(release, scratch / "peer-models" / key)
        servers = _servers(release, meta["model_name"], joblib_path, peers, pythons, scratch)
        report["start_only"][key] = {}
        for server in servers:
            try:
                report["start_only"][key][server.name] = start_only(server, X, scratch, args.start_runs)
            except Exception as exc:
                report["start_only"][key][server.name] = f"failed: {exc}"
            print(f"  start {key} {server.name}: {report['start_only'][key][server.name]}", flush=True)
    report["load_average_end"] = os.getloadavg()
    print(render(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json_out}")


# -- report --------------------------------------------------------------------------------


def _best(servers: dict[str, Any], peers: list[str], value: Any, lower: bool = False) -> tuple[float, str]:
    found = [(value(servers[p]), p) for p in peers if "failed" not in servers[p]]
    found = [(v, p) for v, p in found if v]
    if not found:
        return 0.0, "-"
    return min(found) if lower else max(found)


def _row(
    out: list[str], servers: dict[str, Any], label: str, get: Any, fmt: str, lower: bool = False
) -> None:
    """One table row: every server's value, the best peer's, our best setting's and our ratio
    to the best peer (each side at its best setting for this figure)."""
    names = list(servers)
    ours = [n for n in names if n in OURS]
    peers = [n for n in names if n not in OURS]
    cells = []
    for name in names:
        figures = servers[name]
        if "failed" in figures:
            cells.append("failed")
            continue
        value = get(figures)
        cells.append("n/a" if not value else format(value, fmt))
    best, who = _best(servers, peers, get, lower)
    mine, which = _best(servers, ours, get, lower)
    ratio = _ratio(mine, best, lower)
    shown = "-" if ratio != ratio else (f"{ratio:.1f}x lower" if lower else f"{ratio:.1f}x")
    out.append(f"| {label} | " + " | ".join(cells) + f" | {who} | {which} | {shown} |")


def _single(figures: dict[str, Any], connections: int, key: str) -> Any:
    single = figures["single"]
    return single.get(str(connections), single.get(connections, {})).get(key)


def _best_protocol(figures: dict[str, Any], size: int) -> float:
    return max((v for k, v in figures["rows_per_s"].items() if k.endswith(f"-{size}")), default=0.0)


def render(report: dict[str, Any]) -> str:
    """Markdown tables: each server's figures, the best peer and our ratio to it."""
    out: list[str] = []
    for key, model in report["models"].items():
        servers = model["servers"]
        names = list(servers)
        floor = model["in_process_rows_per_s"]
        out.append(f"\n**{key}** ({model['estimator']})\n")
        out.append("| Figure | " + " | ".join(names) + " | best peer | ours at best | ours vs best peer |")
        out.append("|---" * (len(names) + 4) + "|")
        for c in CONCURRENCY:
            _row(out, servers, f"single row, c={c}: req/s", lambda f, c=c: _single(f, c, "rps"), ".0f")
            _row(
                out,
                servers,
                f"single row, c={c}: p99 ms",
                lambda f, c=c: _single(f, c, "p99_ms"),
                ".2f",
                True,
            )
        for size in BATCHES:
            for protocol in ("json", "binary", "grpc"):
                label = f"{size:,} rows, {protocol}: rows/s"
                _row(out, servers, label, lambda f, k=f"{protocol}-{size}": f["rows_per_s"].get(k), ".0f")
            label = f"{size:,} rows, best protocol: rows/s"
            _row(out, servers, label, lambda f, s=size: _best_protocol(f, s), ".0f")
        _row(out, servers, "start to first answer, s", lambda f: f["start_s"], ".2f", True)
        _row(out, servers, "idle memory, MB", lambda f: f["idle_mb"], ".0f", True)
        for size in BATCHES:
            best_ours, _ = _best(servers, list(OURS), lambda f, s=size: _best_protocol(f, s))
            runtime = floor.get(f"runtime-{size}", 0)
            sklearn = floor.get(f"sklearn-{size}", 0)
            out.append(
                f"\nIn process, {size:,} rows: scikit-learn predict {sklearn:,.0f} rows/s, compiled runtime "
                f"{runtime:,.0f} rows/s; ours over HTTP/gRPC (best) {best_ours:,.0f} rows/s = "
                f"{_ratio(best_ours, runtime):.2f}x the compiled runtime, "
                f"{_ratio(best_ours, sklearn):.2f}x scikit-learn."
            )
        skipped = {n: f["skipped"] for n, f in servers.items() if f.get("skipped")}
        if skipped:
            out.append(f"\nNot timed: {json.dumps(skipped)}")
    if report.get("start_only"):
        out.append("\n**start to first answer, s (start-up only)**\n")
        for key, starts in report["start_only"].items():
            cells = ", ".join(
                f"{n} {v:.2f}" if isinstance(v, float) else f"{n} {v}" for n, v in starts.items()
            )
            out.append(f"- {key}: {cells}")
    return "\n".join(out)


if __name__ == "__main__":
    main()
