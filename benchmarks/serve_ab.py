"""Benchmark: this working tree's model server against another revision's, alternating, same run.

    .venv/bin/python -m benchmarks.serve_ab --base REV [--model logistic_regression] [--pairs 5]
        [--workers 1]

Why alternating pairs: this machine's speed moves by 2x within minutes, so figures from runs
minutes apart cannot be compared. Both servers stay up (an idle one costs nothing) and each load
runs on both back to back, in alternating order; the ratio of each pair is printed, and their
median, with each side's server CPU per request (its process tree's user and system time over
the requests served: steadier than rates when the machine's speed moves). The base revision is
checked out into a temporary git worktree, and each side trains its own release with its own
code (`benchmarks/serve_models.py`: the release format changes between revisions); both use the
same data and the same request bodies.

Loads (wrk, V2 inference protocol): single-row JSON at concurrency 1, 8 and 32; 1,000- and
10,000-row batches at concurrency 4 as JSON and as binary tensors. Not a test: it asserts
nothing, only reports. Needs `wrk` on PATH and git.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.serve_models import MODEL_NAMES
from benchmarks.serve_vs_mlflow import (
    WrkResult,
    _first_answer,
    _free_port,
    _stop,
    cpu_ms_per_request,
    launch_ours,
    run_wrk,
    tree_cpu_seconds,
)
from benchmarks.serve_vs_peers import REPO, _rows, write_http_bodies

LOADS = (
    ("json", 1, 1),
    ("json", 1, 8),
    ("json", 1, 32),
    ("json", 1000, 4),
    ("binary", 1000, 4),
    ("json", 10_000, 4),
    ("binary", 10_000, 4),
)
"""(body kind, rows per request, concurrency)."""


@dataclass
class Side:
    name: str
    tree: Path
    release: Path = Path()
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    results: dict[str, list[WrkResult]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per load, server CPU milliseconds per request of each run."""


def train(side: Side, workdir: Path, model: str) -> None:
    """The side's release of `model`, trained by the side's own code."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_models", str(workdir)],
        cwd=side.tree,
        check=True,
        capture_output=True,
    )
    (side.release,) = (p.parent for p in (workdir / "artifacts" / MODEL_NAMES[model]).glob("*/release.json"))


def start(side: Side, model_name: str, single: bytes, log: Path, workers: int) -> None:
    port = _free_port()
    started = time.monotonic()
    flags = ("--grpc-port", "0", "--workers", str(workers))
    side.proc = launch_ours(side.release, *flags, tree=side.tree)(port, log)
    side.url = f"http://127.0.0.1:{port}/v2/models/{model_name}/infer"
    seconds = _first_answer(side.url, single, side.proc, started, 120)
    print(f"{side.name}: answering after {seconds:.2f}s ({side.tree})", flush=True)


def write_bodies(release: Path, scratch: Path) -> dict[tuple[str, int], tuple[Path, dict[str, str]]]:
    """Per (body kind, rows), the body file and its headers."""
    bodies: dict[tuple[str, int], tuple[Path, dict[str, str]]] = {}
    for size in sorted({size for _, size, _ in LOADS}):
        for key, body in write_http_bodies(_rows(release, size)[0], scratch).items():
            bodies[key.split("-")[0], size] = body
    return bodies


def _label(load: tuple[str, int, int]) -> str:
    kind, size, connections = load
    return f"{kind}, {size} rows, c={connections}"


def run_pairs(
    sides: tuple[Side, Side],
    bodies: dict[tuple[str, int], tuple[Path, dict[str, str]]],
    pairs: int,
    duration: int,
) -> None:
    for pair in range(pairs):
        for load in LOADS:
            kind, size, connections = load
            path, headers = bodies[kind, size]
            for side in sides if pair % 2 == 0 else sides[::-1]:
                assert side.proc is not None
                before = tree_cpu_seconds(side.proc.pid)
                result = run_wrk(side.url, path, connections, duration, headers, 20)
                cpu_ms = cpu_ms_per_request(side.proc.pid, before, result.rps * duration)
                side.results.setdefault(_label(load), []).append(result)
                side.cpu_ms.setdefault(_label(load), []).append(cpu_ms)
        print(f"pair {pair + 1} of {pairs} done", flush=True)


def report(sides: tuple[Side, Side]) -> dict[str, dict[str, Any]]:
    ours, base = sides
    table: dict[str, dict[str, Any]] = {}
    print(
        f"\n| load | rows/s, {ours.name} | rows/s, {base.name} | ratio (median of pairs) | pairs | p99 ms "
        "| CPU ms/request |"
    )
    print("|---|---|---|---|---|---|---|")
    for load in LOADS:
        label, size = _label(load), load[1]
        a, b = ours.results[label], base.results[label]
        ratios = [x.rps / y.rps for x, y in zip(a, b, strict=True) if y.rps]
        row: dict[str, Any] = {
            "ours_rows_per_s": statistics.median(r.rps for r in a) * size,
            "base_rows_per_s": statistics.median(r.rps for r in b) * size,
            "ratio": statistics.median(ratios) if ratios else float("nan"),
            "pairs": [round(r, 2) for r in ratios],
            "p99_ms": [statistics.median(r.p99_ms for r in a), statistics.median(r.p99_ms for r in b)],
            "errors": sum(r.errors for r in a + b),
            "cpu_ms_per_request": [statistics.median(side.cpu_ms[label]) for side in sides],
        }
        table[label] = row
        print(
            f"| {label} | {row['ours_rows_per_s']:.0f} | {row['base_rows_per_s']:.0f} | {row['ratio']:.2f}x "
            f"| {row['pairs']} | {row['p99_ms'][0]:.2f} / {row['p99_ms'][1]:.2f} "
            f"| {row['cpu_ms_per_request'][0]:.3f} / {row['cpu_ms_per_request'][1]:.3f} |"
        )
    return table


@contextmanager
def trained_sides(
    base: str, model: str, prefix: str
) -> Iterator[tuple[tuple[Side, Side], dict[tuple[str, int], tuple[Path, dict[str, str]]]]]:
    """The working tree and revision `base` (checked out into a temporary git worktree, removed
    on exit), each with its release of `model` trained by its own code, and the request bodies."""
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", base], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        scratch = Path(tmp)
        base_tree = scratch / "base-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), base_rev], cwd=REPO, check=True)
        sides = (Side("working tree", REPO), Side(f"base {base_rev}", base_tree))
        try:
            for i, side in enumerate(sides):
                print(f"{side.name}: training its release", flush=True)
                train(side, scratch / f"models-{i}", model)
            yield sides, write_bodies(sides[0].release, scratch)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD, main~3)")
    parser.add_argument("--model", choices=sorted(MODEL_NAMES), default="logistic_regression")
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs per load (median)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=1, help="server processes on each side")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    with trained_sides(args.base, args.model, "serve-ab-") as (sides, bodies):
        model_name = json.loads((sides[0].release / "release.json").read_text())["model_name"]
        try:
            for i, side in enumerate(sides):
                start(
                    side,
                    model_name,
                    bodies["json", 1][0].read_bytes(),
                    side.release.parent / f"server-{i}.log",
                    args.workers,
                )
            run_pairs(sides, bodies, args.pairs, args.duration)
        finally:
            for side in sides:
                if side.proc is not None:
                    _stop(side.proc)
    table = report(sides)
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "base": sides[1].name.removeprefix("base "),
                    "model": args.model,
                    "workers": args.workers,
                    "loads": table,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
