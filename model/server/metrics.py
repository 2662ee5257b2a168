"""Prometheus metrics of one server: a registry per app, label values only from fixed sets.

Among several workers (model.server.workers) the values live in Prometheus' multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor before this process imported the client), and
a scrape of any worker sums them: counters and histograms over the workers, requests in flight
over the live ones; ready is the lowest worker's, load time the slowest's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from model.server.drift_monitor import DriftSnapshot

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "RPC"})
"""HTTP methods kept as label values (others count as OTHER); RPC marks gRPC calls."""

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


def _process_id() -> int:
    """This process's id, updated on fork. The multiprocess values ask for it on every update
    (16 times a request) to notice a fork, and os.getpid() is a system call."""
    return _pid


if values.ValueClass is not values.MutexValue:
    # Multiprocess mode, chosen when prometheus_client was imported; no metric exists yet (they
    # are all made here), so no file is open under the client's own process identifier.
    os.register_at_fork(after_in_child=_forked)
    values.ValueClass = values.MultiProcessValue(_process_id)


class ServerMetrics:
    """Counters and histograms the request path updates; children are cached per label tuple."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._exported = r
        """What a scrape renders: this registry, or all the workers' files."""
        if multiprocess_dir is not None:
            self._exported = CollectorRegistry()
            MultiProcessCollector(self._exported, str(multiprocess_dir))
        self.requests = Counter(
            "mlops_server_requests",
            "Requests by protocol (http, grpc), route (or RPC), method and status (HTTP code or gRPC code).",
            ["protocol", "route", "method", "status"],
            registry=r,
        )
        self.errors = Counter(
            "mlops_server_request_errors",
            "Rejected requests by protocol, route and error code.",
            ["protocol", "route", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "mlops_server_request_duration_seconds",
            "Time from request start to the last byte of the response, by protocol and route.",
            ["protocol", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.encodings = Counter(
            "mlops_server_request_encodings",
            "Prediction requests by protocol and how their tensors came: json, csv, binary (HTTP binary "
            "data extension), raw (gRPC raw_input_contents) or typed (gRPC contents).",
            ["protocol", "encoding"],
            registry=r,
        )
        self.request_rows = Histogram(
            "mlops_server_request_rows", "Rows per prediction request.", buckets=_ROW_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "mlops_server_batch_rows",
            "Rows per model call after combining concurrent requests.",
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "mlops_server_batch_requests",
            "Requests combined into one model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.in_flight = Gauge(
            "mlops_server_in_flight_requests",
            "Requests being handled.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.load_seconds = Gauge(
            "mlops_server_model_load_seconds",
            "Seconds from start to a loaded, self-tested model.",
            registry=r,
            multiprocess_mode="max",
        )
        self.ready = Gauge(
            "mlops_server_ready",
            "1 when the server accepts predictions.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_info = Gauge(
            "mlops_server_model_info",
            "The served release (value 1).",
            ["model_name", "release_id", "model_version", "runtime"],
            registry=r,
            multiprocess_mode="max",
        )
        self._children: dict[tuple[str, ...], MetricWrapperBase] = {}

    def observe_request(
        self, route: str, method: str, status: int | str, seconds: float, protocol: str = "http"
    ) -> None:
        key = (protocol, route, method, str(status))
        child = self._children.get(key)
        if child is None:
            child = self.requests.labels(
                protocol, route, method if method in METHODS else "OTHER", str(status)
            )
            self._children[key] = child
        child.inc()  # type: ignore[attr-defined]
        hkey = ("latency", protocol, route)
        hist = self._children.get(hkey)
        if hist is None:
            hist = self._children[hkey] = self.latency.labels(protocol, route)
        hist.observe(seconds)  # type: ignore[attr-defined]

    def observe_error(self, route: str, code: str, protocol: str = "http") -> None:
        self.errors.labels(protocol, route, code).inc()

    def observe_encoding(self, protocol: str, encoding: str) -> None:
        key = ("encoding", protocol, encoding)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.encodings.labels(protocol, encoding)
        child.inc()  # type: ignore[attr-defined]

    def watch_drift(self, snapshot: Callable[[], DriftSnapshot]) -> None:
        """Export the drift window's figures, computed afresh on every scrape."""
        self._exported.register(DriftCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self._exported)


class DriftCollector(Collector):
    """The drift gauges, read from the window when scraped. Label values are the profile's own
    feature names and class labels (or bin indices): a fixed set per release."""

    def __init__(self, snapshot: Callable[[], DriftSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot()
        psi, ks, rows, prediction_psi, shares = self._families()
        rows.add_metric([], snap.rows)
        for feature in snap.features:
            psi.add_metric([feature.name], feature.psi)
            if feature.ks is not None:
                ks.add_metric([feature.name], feature.ks)
        if snap.prediction is not None:
            prediction_psi.add_metric([], snap.prediction.psi)
        for label, share in snap.prediction_shares.items():
            shares.add_metric([label], share)
        return iter([psi, ks, rows, prediction_psi, shares])

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "mlops_server_drift_psi",
                "PSI of each feature over the drift window against the release's training profile.",
                labels=["feature"],
            ),
            GaugeMetricFamily(
                "mlops_server_drift_ks",
                "Kolmogorov-Smirnov statistic of each feature over the drift window against the "
                "training profile's quantiles (version 2 profiles only).",
                labels=["feature"],
            ),
            GaugeMetricFamily("mlops_server_drift_window_rows", "Rows currently in the drift window."),
            GaugeMetricFamily(
                "mlops_server_prediction_drift_psi",
                "PSI of the drift window's predictions against the training profile's predictions.",
            ),
            GaugeMetricFamily(
                "mlops_server_prediction_share",
                "Share of the drift window's predictions per class label (classification) or per "
                "prediction bin index (regression).",
                labels=["bin"],
            ),
        )
