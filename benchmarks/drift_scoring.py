"""Benchmark: drift scoring of 1,000,000 rows x 30 features against a reference profile.

    .venv/bin/python -m benchmarks.drift_scoring [--rows 1000000] [--features 30] [--runs 3]

Builds a profile from 20,000 training rows (so every feature has a 1,001-point quantile grid,
the usual case), draws the rows to score (a third of the features shifted), then times, in the
same run, medians of `--runs`:

- `model.drift.score`: PSI and KS of every feature and PSI of the predicted classes;
- the lower bound the issue names: a bare `numpy.searchsorted` + `numpy.bincount` pass per
  column over the same data, into the 9 PSI edges (all PSI needs) and into the KS points;
Prints rows per second and the ratio of each time to the bare pass; then the time of one
/metrics scrape's drift figures over a full 5,000-row server window (`DriftMonitor.snapshot`).
Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pandas as pd

from model.drift import ReferenceProfile, Scorer, build_profile, score

TRAIN_ROWS = 20_000
WINDOW_ROWS = 5000
T = TypeVar("T")


def _median_seconds(work: Callable[[], T], runs: int) -> tuple[float, T]:
    """The median time of `runs` calls of `work`, and what the last call returned."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _data(rows: int, features: int) -> tuple[ReferenceProfile, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    columns = [f"f{i:02d}" for i in range(features)]
    train = pd.DataFrame(rng.normal(size=(TRAIN_ROWS, features)), columns=columns)
    profile = build_profile(train, rng.integers(0, 3, TRAIN_ROWS), classification=True)
    current = rng.normal(size=(rows, features))
    current[:, ::3] += 0.5
    return profile, current, rng.integers(0, 3, rows)


def _bare(columns: list[np.ndarray], points: list[np.ndarray]) -> None:
    for column, sorted_points in zip(columns, points, strict=True):
        np.bincount(np.searchsorted(sorted_points, column), minlength=len(sorted_points) + 1)


def _scrape_seconds(
    profile: ReferenceProfile, current: np.ndarray, predictions: np.ndarray, runs: int
) -> float:
    from model.server.drift_monitor import DriftMonitor

    monitor = DriftMonitor(profile, profile.feature_names, WINDOW_ROWS)
    monitor.record(current[:WINDOW_ROWS], predictions[:WINDOW_ROWS])
    monitor.fold()
    return _median_seconds(monitor.snapshot, max(runs, 5))[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    profile, current, predictions = _data(args.rows, args.features)
    columns = [np.ascontiguousarray(current[:, j]) for j in range(args.features)]
    edges = [np.asarray(f.edges) for f in profile.features]
    points = [g.points for g in Scorer.of(profile).grids]
    score(profile, current[:1000], predictions[:1000])  # warm-up
    bare_edges, _ = _median_seconds(lambda: _bare(columns, edges), args.runs)
    bare_points, _ = _median_seconds(lambda: _bare(columns, points), args.runs)
    scored, report = _median_seconds(lambda: score(profile, current, predictions), args.runs)
    figures = {
        "bare searchsorted+bincount, PSI edges": bare_edges,
        "bare searchsorted+bincount, KS points": bare_points,
        "model.drift.score (PSI+KS+predictions)": scored,
    }
    lower = figures["bare searchsorted+bincount, PSI edges"]
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{args.rows:,} rows x {args.features} features against a profile of {TRAIN_ROWS:,} training rows "
        f"(median of {args.runs}); {len(report.drifted_features)} features drifted\n"
    )
    print(f"| {'pass':52} | {'seconds':>8} | {'rows/s':>12} | {'x bare (PSI edges)':>18} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 14}|{'-' * 20}|")
    for name, seconds in figures.items():
        print(f"| {name:52} | {seconds:8.3f} | {args.rows / seconds:12,.0f} | {seconds / lower:18.2f} |")
    scrape = _scrape_seconds(profile, current, predictions, args.runs)
    print(f"\none scrape of a full {WINDOW_ROWS:,}-row server window: {scrape * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
