"""Drift of the traffic one server sees: a sliding window of recent rows against the release's profile.

The window is a ring buffer of the last `window_rows` rows, each row its feature values and
its prediction (the class bin for classifiers, the value for regressors). Entering costs a copy
of the row, O(features); the oldest row is overwritten once the ring is full. The request path
only appends the request's arrays to a pending queue, and drops from it the oldest requests whose
rows newer ones have pushed out of the window's reach; the queue is folded into the ring before
every scrape and, in a worker among several, every FOLD_SECONDS for its siblings' scrapes. So a
large batch costs the request path nothing but a reference (folding each 10,000-row request as
it came copied a window of rows per request; most were overwritten before any scrape read
them), and the queue holds at most a window of rows plus one request.

Rows are stored as requests bring them (row-major), and a fold copies a few large requests into
the ring as they are: a feature-major ring read each batch once per feature, and joining the
requests first copied their rows twice. Four 1,000-row requests folded in 0.58 to 0.75 ms of CPU
that way, 0.34 to 0.39 ms now (the app in process, 4 callers); a scrape transposes the window
instead, once per interval.

PSI and KS are computed when /metrics is scraped, by the `model.drift.Scorer` that scores a
whole dataset, so a scrape shows exactly what `score` gives for the window's rows. Why values
rather than bin indices with running counts: locating a row among a 1,001-point KS grid costs
a binary search per feature, which measured 20-40 us per single-row request on 30 features
(a quarter of the request; the copy costs about 2 us), while a scrape recounts a 5,000-row
window of 30 features in 7-15 ms, once per scrape interval, off the event loop
(benchmarks/drift_scoring.py, docs/drift.md).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import PROFILE_FILE
from model.drift import ClassBins, DriftError, FeatureDrift, ReferenceProfile, Scorer, read_profile
from model.server.workers import WorkerSlot

__all__ = ["FOLD_SECONDS", "DriftMonitor", "DriftSnapshot", "open_monitor"]

log = logging.getLogger("mlops.server")

_DIRECT_CHUNKS = 8
"""Most pending requests whose rows a fold copies into the ring one by one, without joining them."""
FOLD_SECONDS = 1.0
"""How often a worker among several folds its pending rows, for its siblings' scrapes."""


def _filled_path(ring: Path) -> Path:
    return ring.with_name(ring.stem + "-filled.npy")


@dataclass(frozen=True)
class DriftSnapshot:
    """The window against the reference, as the /metrics scrape exports it."""

    rows: int
    features: list[FeatureDrift]
    """Per feature, in the profile's order (empty while the window is empty)."""
    prediction: FeatureDrift | None
    """None while the window is empty, or when the profile has no prediction distribution."""
    prediction_shares: dict[str, float]
    """Share of the window's predictions per class label (classification) or per bin index."""


def open_monitor(
    folder: Path, feature_names: Sequence[str], window_rows: int, slot: WorkerSlot | None = None
) -> DriftMonitor | None:
    """The monitor for a release folder, or None (logged once) when drift monitoring is off.

    A worker among several (`slot`) keeps its share of the window in a file the others read
    when scraped, so that each scrape scores the recent rows of all of them.
    """
    if window_rows == 0:
        log.info("drift monitoring off: the drift window is 0 rows")
        return None
    try:
        profile = read_profile(folder / PROFILE_FILE)
        if slot is None:
            return DriftMonitor(profile, feature_names, window_rows)
        rings = [slot.shared / f"drift-{i}.npy" for i in range(slot.count)]
        share = -(-window_rows // slot.count)
        siblings = rings[: slot.index] + rings[slot.index + 1 :]
        return DriftMonitor(profile, feature_names, share, ring=rings[slot.index], siblings=siblings)
    except DriftError as exc:
        log.warning("drift monitoring off: %s", exc)
    except Exception:  # monitoring must not keep a servable release from serving
        log.exception("drift monitoring off: the reference profile could not be used")
    return None


class DriftMonitor:
    """The window of one served release; `record` on the request path, `snapshot` per scrape.

    `window_rows` is ServerSettings.drift_window_rows, already checked to be in range (and not 0).
    With `ring`, the window lives in that file (shared memory) for the `siblings`' scrapes, and
    `window` adds the rows of the siblings' rings: they fold their pending rows at least once a
    second (FOLD_SECONDS), and a ring read while its worker folds may mix old and new rows,
    which neither PSI nor KS can tell from any other sample of recent traffic.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        feature_names: Sequence[str],
        window_rows: int,
        ring: Path | None = None,
        siblings: Sequence[Path] = (),
    ) -> None:
        if profile.feature_names != list(feature_names):
            raise DriftError(
                "the reference profile's features differ from the model's signature "
                f"({profile.feature_names} against {list(feature_names)})"
            )
        self.window_rows = window_rows
        self.scorer = Scorer.of(profile)
        shape = (window_rows, len(profile.features) + 1)
        if ring is None:
            cells, self._filled = np.zeros(shape), np.zeros(1, dtype=np.int64)
        else:
            cells = np.lib.format.open_memmap(ring, mode="w+", shape=shape)
            self._filled = np.lib.format.open_memmap(
                _filled_path(ring), mode="w+", dtype=np.int64, shape=(1,)
            )
        self._values = cells[:, :-1]
        self._predictions = cells[:, -1]
        """Class bins (classification) or predicted values (regression)."""
        self._head = 0
        self._siblings = list(siblings)
        # Two queues of arrays rather than one of tuples: arrays are not tracked by the cyclic
        # garbage collector, tuples would be, and would survive into its older generations.
        self._pending_X: deque[np.ndarray] = deque()
        self._pending_predictions: deque[np.ndarray] = deque()
        self._pending_rows = 0
        # Requests queue (and workers fold) on the event loop, scrapes fold and read from a
        # worker thread: the lock keeps either from seeing the other's work half done.
        self._lock = threading.Lock()

    def record(self, X: np.ndarray, predictions: np.ndarray) -> None:
        """Queue a request's rows and predictions, dropping queued requests newer rows replace."""
        with self._lock:
            pending_X, pending_predictions = self._pending_X, self._pending_predictions
            pending_X.append(X)
            pending_predictions.append(predictions)
            self._pending_rows += len(X)
            while self._pending_rows - len(pending_X[0]) >= self.window_rows:
                self._pending_rows -= len(pending_X.popleft())
                pending_predictions.popleft()

    def fold(self) -> None:
        """Copy pending rows into the ring, overwriting the oldest once it is full."""
        with self._lock:
            pending_X, pending_predictions = self._pending_X, self._pending_predictions
            if not pending_X:
                return
            self._pending_X, self._pending_predictions, self._pending_rows = deque(), deque(), 0
            predictions = (
                pending_predictions[0]
                if len(pending_predictions) == 1
                else np.concatenate(pending_predictions)
            )[-self.window_rows :]
            if isinstance(self.scorer.prediction, ClassBins):
                predictions = self.scorer.prediction.locate(predictions)
            elif self.scorer.prediction is None:
                predictions = np.zeros(len(predictions))
            # A few batches go into the ring as they are: joining them first copied every row
            # twice. Many small requests are joined: one copy beats hundreds of tiny ones.
            chunks: Sequence[np.ndarray] = (
                pending_X if len(pending_X) <= _DIRECT_CHUNKS else (np.concatenate(pending_X),)
            )
            skip, done = sum(len(X) for X in chunks) - len(predictions), 0
            for X in chunks:
                if skip >= len(X):
                    skip -= len(X)
                    continue
                X, skip = X[skip:], 0
                self._write(X, predictions[done : done + len(X)])
                done += len(X)
            self._filled[0] = min(self.window_rows, int(self._filled[0]) + done)

    def _write(self, X: np.ndarray, predictions: np.ndarray) -> None:
        """Rows (at most the window's) at the ring's head: up to its end, then from its start."""
        head, rows = self._head, len(X)
        first = min(rows, self.window_rows - head)
        self._values[head : head + first] = X[:first]
        self._predictions[head : head + first] = predictions[:first]
        self._values[: rows - first] = X[first:]
        self._predictions[: rows - first] = predictions[first:]
        self._head = (head + rows) % self.window_rows

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of the window's rows (features x rows) and predictions, pending rows folded in.

        Row order is not kept: neither PSI nor KS depends on it.
        """
        self.fold()
        with self._lock:
            filled = int(self._filled[0])
            values = [np.ascontiguousarray(self._values[:filled].T)]
            predictions = [self._predictions[:filled].copy()]
        for ring in self._siblings:
            try:
                cells, filled = np.load(ring, mmap_mode="r"), int(np.load(_filled_path(ring))[0])
            except (OSError, ValueError, IndexError):  # that worker has not loaded (or written) yet
                continue
            values.append(np.ascontiguousarray(cells[:filled, :-1].T))
            predictions.append(np.array(cells[:filled, -1]))
        if len(values) == 1:
            return values[0], predictions[0]
        return np.concatenate(values, axis=1), np.concatenate(predictions)

    def snapshot(self) -> DriftSnapshot:
        """PSI and KS of the window per feature, and of its predictions (computed now)."""
        values, predictions = self.window()
        rows = len(predictions)
        if rows == 0:
            return DriftSnapshot(0, [], None, {})
        features = self.scorer.features(values)
        bins = self.scorer.prediction
        if bins is None:
            return DriftSnapshot(rows, features, None, {})
        # The ring holds class bins (located when folded) for classifiers, values for regressors.
        if isinstance(bins, ClassBins):
            counts = np.bincount(predictions.astype(np.intp), minlength=bins.codes)
        else:
            counts = bins.count(predictions)
        return DriftSnapshot(
            rows, features, self.scorer.prediction_drift(counts), self.scorer.prediction_shares(counts)
        )
