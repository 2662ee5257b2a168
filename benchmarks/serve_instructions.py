"""Benchmark: instructions the server's request path executes, this working tree against a revision.

    .venv/bin/python -m benchmarks.serve_instructions --base REV [--json-out FILE]

Why instructions: this machine's speed moves by 2x within minutes, and even alternating A/B
pairs of identical servers (`serve_ab.py`) spread from about 0.7x to 1.5x on single rows, so a
change worth 5-15% of a request cannot be seen in wall-clock time. Valgrind's cachegrind
(`--cache-sim=no`) counts the instructions the same Python code executes, and those repeat
within about 1% for the deterministic parts. They measure work, not time: cache misses, page
faults and waiting are not in them, so they judge changes to the Python path, not to memory.

Parts, on the logistic-regression release of `benchmarks/serve_models.py`, trained by each
side's own code (the base revision is checked out into a temporary git worktree):

- decode: `Decoder.v2` on a single-row and a 1,000-row V2 JSON body;
- predict: the served runtime on those rows;
- request: the whole ASGI app, single-row requests from 8 concurrent callers, no network
  (noisier, about 5%: the batcher adapts to measured time).

Each figure is (count at N2 - count at N1) / (N2 - N1) iterations, so interpreter start and
model loading cancel out. Not a test: it asserts nothing, only reports. Needs valgrind on PATH
(Debian: valgrind) and git.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PARTS = (("decode", 1), ("decode", 1000), ("predict", 1), ("predict", 1000), ("request", 1))
"""(part, rows per call)."""
_ITERATIONS = {1: (200, 2200), 1000: (20, 220)}
"""Per rows per call, the two iteration counts whose difference is measured."""
_CALLERS = 8


def _inner(part: str, release: str, body_path: str, iterations: int) -> None:
    """Run `part` `iterations` times with the model code on sys.path (the side's own tree)."""
    from model.server import ServerSettings, create_app

    body = Path(body_path).read_bytes()

    async def loaded() -> Any:
        app = create_app(ServerSettings(model_uri=release, grpc_port=0))
        app.start_loading()
        await app.wait_loaded(600)
        return app

    app = asyncio.run(loaded())
    if part == "decode":
        for _ in range(iterations):
            app.decoder.v2(body)
    elif part == "predict":
        X = app.decoder.v2(body).X
        for _ in range(iterations):
            app.release.runtime.predict(X)
    else:
        asyncio.run(_requests(app, body, iterations))


async def _requests(app: Any, body: bytes, iterations: int) -> None:
    name = app.release.model_name
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v2/models/{name}/infer",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    async def caller(count: int) -> None:
        for _ in range(count):
            await app(dict(scope), receive, send)

    await asyncio.gather(*(caller(iterations // _CALLERS) for _ in range(_CALLERS)))
    if set(statuses) != {200}:
        raise SystemExit(f"requests answered {sorted(set(statuses))}, not only 200")


def _instructions(tree: Path, part: str, release: Path, body: Path, iterations: int) -> int:
    """Instructions of one run of this file's inner mode, with `tree`'s model code."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--inner",
        part,
        str(release),
        str(body),
        str(iterations),
    ]
    # One BLAS thread, as the server runs (model/server/__main__.py): under valgrind a pool's
    # threads spin in turn, and their instructions would count as the call's.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{part} under valgrind failed in {tree}:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(tree: Path, part: str, release: Path, body: Path, rows: int) -> float:
    low, high = _ITERATIONS[rows]
    counts = [_instructions(tree, part, release, body, n) for n in (low, high)]
    return (counts[1] - counts[0]) / (high - low)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        part, release, body, iterations = sys.argv[2:6]
        _inner(part, release, body, int(iterations))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD, main~3)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    from benchmarks.serve_ab import trained_sides

    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH (Debian/Ubuntu: apt-get install valgrind)")
    table: dict[str, dict[str, float]] = {}
    with trained_sides(args.base, "logistic_regression", "serve-instructions-") as (sides, bodies):
        for part, rows in PARTS:
            label = f"{part}, {rows} row{'s' if rows > 1 else ''}"
            figures = table[label] = {
                side.name: per_call(side.tree, part, side.release, bodies["json", rows][0], rows)
                for side in sides
            }
            ours, base = figures[sides[0].name], figures[sides[1].name]
            print(f"{label}: {ours:,.0f} against {base:,.0f} instructions ({ours / base:.2f}x)", flush=True)
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"base": sides[1].name.removeprefix("base "), "parts": table}, indent=2)
        )


if __name__ == "__main__":
    main()
