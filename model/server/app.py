"""The ASGI app: MLflow scoring protocol, Open Inference Protocol, health, metrics.

A plain ASGI callable rather than a framework router: the request path is a dict lookup,
a body read, the decoder and the batcher, and every microsecond spent elsewhere shows up
directly in single-row throughput.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

import numpy as np
import orjson

from model.runtime import Prediction
from model.server.batching import MicroBatcher
from model.server.decode import V2_KINDS, Decoder, V2Request
from model.server.drift_monitor import FOLD_SECONDS, DriftMonitor, open_monitor
from model.server.errors import RequestError, internal_error
from model.server.loader import LoadedRelease, RetryPolicy, load_release
from model.server.metrics import ServerMetrics
from model.server.settings import ServerSettings
from model.server.tensors import HEADER_LENGTH, encode_output, output_datatype, split_binary_body
from model.server.workers import METRICS_DIR, WorkerSlot, usable_cpus

if TYPE_CHECKING:
    from model.server.grpc_service import GrpcServer

__all__ = ["ServerApp", "create_app", "server_metadata", "v2_metadata", "v2_outputs", "v2_response"]

log = logging.getLogger("mlops.server")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Loader = Callable[[], LoadedRelease]

_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_SERVER_NAME = "mlops-model-server"
_STATIC_ROUTES = frozenset(
    {"/invocations", "/v2/health/live", "/v2/health/ready", "/ping", "/health", "/version", "/metrics", "/v2"}
)
# V2 datatypes of the signature's column kinds.
_V2_DATATYPE = {kind: datatype for datatype, kind in V2_KINDS.items()}


_Reply = tuple[int, bytes, bytes, list[tuple[bytes, bytes]] | None]
"""Status, body, content type, and headers beyond the usual ones."""
_T = TypeVar("_T")
_BODY_READ = "mlops.body_read"
"""Set in a request's scope once its whole body arrived: a request that runs out of time before
that was slow to send (408), not slow to answer (504)."""
_UNREAD_BODY = frozenset({"body_too_large", "body_timeout"})
"""Errors answered before the body was read: the connection closes, since its unread bytes
would otherwise wait in front of the next request."""


class _ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class ServerApp:
    """One model release behind HTTP. Build with `create_app`; serve with uvicorn (lifespan on)."""

    def __init__(self, settings: ServerSettings, loader: Loader | None = None) -> None:
        self.settings = settings
        self.slot = WorkerSlot.of(settings)
        """This process's place among the supervisor's workers (None: the only server process)."""
        self.metrics = ServerMetrics(None if self.slot is None else self.slot.shared / METRICS_DIR)
        self._peers_ready = self.slot is None
        self.release: LoadedRelease | None = None
        self.decoder: Decoder | None = None
        self.failure: str | None = None
        self.draining = False
        self.started = time.monotonic()
        self._loader = loader or (
            lambda: load_release(
                settings.model_uri,
                settings.model_sha256,
                settings.model_version,
                retry=RetryPolicy(attempts=settings.load_attempts),
            )
        )
        self._load_task: asyncio.Task[None] | None = None
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        """Requests in flight by task, with the monotonic time their limit runs out."""
        self._expired: set[asyncio.Task[Any]] = set()
        """Requests the watchdog cancelled for running out of time."""
        self._watchdog: asyncio.Task[None] | None = None
        self._folding: asyncio.Task[None] | None = None
        self._arriving = 0
        self._batcher: MicroBatcher | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._v2_models_prefix = b""
        self._drain_started: float | None = None
        self._grpc_in_flight = 0
        self._grpc_last_call = -1e9
        self.grpc: GrpcServer | None = None
        """The gRPC service once it listens (None when off or not started yet)."""
        self.drift: DriftMonitor | None = None
        """The drift window once the model loaded (None: off, or the release has no profile)."""

    # -- lifecycle -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Loaded, not draining, and (among workers) every worker loaded: a pod whose readiness
        probe reached the first worker to load would otherwise get traffic the others refuse."""
        if self.release is None or self.draining:
            return False
        if not self._peers_ready:
            assert self.slot is not None
            self._peers_ready = self.slot.all_ready()
        return self._peers_ready

    def begin_drain(self) -> None:
        """SIGTERM: report unready at once; responses from now on close their connection."""
        self.draining = True
        self._drain_started = time.monotonic()
        self.metrics.ready.set(0)

    def grpc_calls(self, delta: int) -> None:
        """The gRPC service reports each call's start (+1) and end (-1)."""
        self._grpc_in_flight += delta
        self._grpc_last_call = time.monotonic()

    def grpc_busy(self, quiet: float = 0.5) -> bool:
        """A gRPC call in flight or within `quiet` seconds. During a drain gRPC clients keep their
        connection until the server's GOAWAY, so recent calls, not open connections, say whether
        they are still sending here."""
        return self._grpc_in_flight > 0 or time.monotonic() - self._grpc_last_call < quiet

    def start_loading(self) -> None:
        if self._load_task is None:
            loop = asyncio.get_running_loop()
            self._load_task = loop.create_task(self._load())
            self._watchdog = loop.create_task(self._enforce_limits())

    async def wait_loaded(self, timeout: float) -> bool:
        """For tests and embedders: wait (bounded) for the load to finish, either way."""
        self.start_loading()
        assert self._load_task is not None
        await asyncio.wait_for(asyncio.shield(self._load_task), timeout)
        return self.release is not None

    async def _load(self) -> None:
        # gRPC starts (its import is about 0.1 s) while the model loads; ready needs both.
        grpc_start = (
            asyncio.get_running_loop().create_task(self._start_grpc()) if self.settings.grpc_port else None
        )
        try:
            release = await asyncio.to_thread(self._loader)
            decoder = Decoder(release.schema, self.settings.max_batch_rows)
            result = await asyncio.to_thread(release.runtime.predict, release.example)
            if len(result.values) != len(release.example):
                raise RuntimeError("the self-test prediction returned the wrong number of rows")
            drift = await asyncio.to_thread(
                open_monitor, release.folder, release.schema.names, self.settings.drift_window_rows, self.slot
            )
            if grpc_start is not None:
                await grpc_start
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("model not loaded, the server stays unready: %s", self.failure)
            return
        self.decoder = decoder
        self._batcher = self._new_batcher(release)
        self._headers = [
            (b"x-mlops-release-id", release.release_id.encode()),
            (b"x-mlops-model-version", release.model_version.encode()),
        ]
        self._v2_models_prefix = f"/v2/models/{release.model_name}".encode()
        if drift is not None:
            self.drift = drift
            self.metrics.watch_drift(drift.snapshot)
            if self.slot is not None:
                self._folding = asyncio.get_running_loop().create_task(_fold_every(drift, FOLD_SECONDS))
        seconds = time.monotonic() - self.started
        self.metrics.load_seconds.set(seconds)
        self.metrics.model_info.labels(
            release.model_name, release.release_id, release.model_version, release.runtime.name
        ).set(1)
        self.release = release
        # Everything loaded so far (scikit-learn, the model) lives as long as the process:
        # moving it out of the collector's reach keeps full collections from adding tens of
        # milliseconds to whichever request triggers them.
        gc.collect()
        gc.freeze()
        if not self.draining:
            self.metrics.ready.set(1)
        if self.slot is not None:
            self.slot.ready_marker(self.slot.index).touch()
        log.info(
            "ready in %.2fs: %s release %s (version %s, %s %s) on runtime %s: %s",
            seconds,
            release.model_name,
            release.release_id,
            release.model_version,
            release.task,
            release.estimator,
            release.runtime.name,
            release.runtime_reason,
        )

    async def _start_grpc(self) -> None:
        settings = self.settings
        module = await asyncio.to_thread(import_module, "model.server.grpc_service")
        self.grpc = await module.start_grpc_server(
            self, settings.host, settings.grpc_port, settings.max_body_bytes
        )
        log.info("gRPC (Open Inference Protocol) on %s:%d", settings.host, self.grpc.port)

    def _new_batcher(self, release: LoadedRelease) -> MicroBatcher:
        # Long model calls go to a thread only while the pod has more CPUs than server
        # processes: with a worker per CPU the thread has no core of its own, and the hop costs
        # CPU that the workers need.
        cpus = usable_cpus()
        offload = self.settings.workers < cpus
        log.info(
            "model calls longer than a thread hop run %s (%d server processes, %.3g CPUs)",
            "on a worker thread" if offload else "on the event loop",
            self.settings.workers,
            cpus,
        )
        return MicroBatcher(
            release.runtime.predict,
            self.settings.batch_combined_rows,
            self.settings.batch_wait_ms / 1000,
            lambda: self._arriving,
            self._observe_batch,
            offload=offload,
        )

    def _observe_batch(self, rows: int, requests: int) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_requests.observe(requests)

    async def close(self) -> None:
        """Lifespan shutdown: HTTP has drained; gRPC gets what is left of the drain time."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        for task in (self._watchdog, self._folding):
            if task is not None:
                task.cancel()
        if self.grpc is not None:
            grace = 0.0
            if self._drain_started is not None:
                grace = max(0.1, self.settings.drain_seconds - (time.monotonic() - self._drain_started))
            await self.grpc.stop(grace)
        if self._batcher is not None:
            self._batcher.close()

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        route = path if path in _STATIC_ROUTES else self._route(path)
        v2 = route.startswith("/v2")
        metrics = self.metrics
        metrics.in_flight.inc()
        extra: list[tuple[bytes, bytes]] = []
        content_type = _JSON
        try:
            status, body, content_type, more = await self.within_limit(
                self._dispatch(route, method, scope, receive), scope
            )
            if more:
                extra.extend(more)
        except RequestError as exc:
            status, body = exc.status, orjson.dumps(exc.body(v2))
            metrics.observe_error(route, exc.code)
            if exc.code in _UNREAD_BODY:
                extra.append((b"connection", b"close"))
        except _ClientGone:
            metrics.in_flight.dec()
            return
        except Exception:
            log.exception("unhandled error on %s", route)
            status = 500
            body = orjson.dumps(internal_error().body(v2))
            metrics.observe_error(route, "internal_error")
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        headers.extend(self._headers)
        if self.draining:
            extra.append((b"connection", b"close"))
        headers.extend(extra)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.in_flight.dec()
            metrics.observe_request(route, method, status, time.perf_counter() - started)

    async def within_limit(self, work: Awaitable[_T], scope: Scope | None = None) -> _T:
        """`work`, cancelled once the request has taken --max-request-seconds: 504, or 408 for an
        HTTP request (`scope`) whose body had not arrived yet. Its rows still queued for the model
        are dropped with it; a model call already running finishes (it holds at most
        --batch-combined-rows rows, or 2 ms' worth)."""
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = time.monotonic() + self.settings.max_request_seconds
        try:
            return await work
        except asyncio.CancelledError:
            # The watchdog only cancels a task while it waits here, inside `work`.
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise self._late(scope) from None
        finally:
            del self._deadlines[task]

    async def _enforce_limits(self) -> None:
        """One timer for every request rather than one each (a timer per request costs more than
        the rest of a small request's bookkeeping): each tick, a tenth of the limit and at most a
        second, cancels the requests past their limit."""
        tick = min(1.0, self.settings.max_request_seconds / 10)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def _late(self, scope: Scope | None) -> RequestError:
        limit = self.settings.max_request_seconds
        if scope is not None and scope["method"] == "POST" and _BODY_READ not in scope:
            return RequestError(
                408,
                "body_timeout",
                f"the request body did not arrive within this server's limit of {limit:g} s per request",
            )
        return RequestError(
            504,
            "deadline_exceeded",
            f"no answer within this server's limit of {limit:g} s per request (--max-request-seconds); "
            "send fewer rows per request, or retry later",
        )

    def _route(self, path: str) -> str:
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/") :].split("/")
            if len(rest) == 1:
                return "/v2/models/{name}"
            if len(rest) == 2 and rest[1] in ("infer", "ready"):
                return "/v2/models/{name}/" + rest[1]
            if len(rest) == 3 and rest[1] == "versions":
                return "/v2/models/{name}/versions/{version}"
            if len(rest) == 4 and rest[1] == "versions" and rest[3] in ("infer", "ready"):
                return "/v2/models/{name}/versions/{version}/" + rest[3]
        return "other"

    async def _dispatch(self, route: str, method: str, scope: Scope, receive: Receive) -> _Reply:
        if route == "/invocations":
            _require(method, "POST")
            return await self._invocations(scope, receive)
        if route.endswith("/infer"):
            _require(method, "POST")
            return await self._v2_infer(scope, receive)
        _require(method, "GET", "HEAD")
        if route == "/v2/health/live":
            return 200, b'{"live":true}', _JSON, None
        if route in ("/v2/health/ready", "/ping", "/health"):
            return self._readiness()
        if route == "/metrics":
            # The drift figures are computed per scrape (7-15 ms for 5,000 rows of 30 features): off the loop.
            render = self.metrics.render
            body = render() if self.drift is None else await asyncio.to_thread(render)
            return 200, body, b"text/plain; version=0.0.4; charset=utf-8", None
        if route == "/version":
            return 200, orjson.dumps(self._version()), _JSON, None
        if route == "/v2":
            return 200, orjson.dumps(server_metadata()), _JSON, None
        if route.startswith("/v2/models/"):
            release = self._model_for(scope["path"])[0]
            if route.endswith("/ready"):
                return self._readiness()
            return 200, orjson.dumps(v2_metadata(release)), _JSON, None
        raise RequestError(404, "not_found", "no such route; see docs/serving.md for the API")

    def _readiness(self) -> _Reply:
        if self.ready:
            return 200, b'{"ready":true}', _JSON, None
        return 503, orjson.dumps({"ready": False, "reason": self.unready_reason()}), _JSON, None

    def unready_reason(self) -> str:
        if self.draining:
            return "draining"
        if self.failure:
            return "load_failed"
        if self.release is not None:
            return "workers_loading"
        return "loading"

    def _version(self) -> dict[str, Any]:
        release = self.release
        if release is None:
            return {"server": _SERVER_NAME, "ready": False}
        return {
            "server": _SERVER_NAME,
            "model_name": release.model_name,
            "release_id": release.release_id,
            "model_version": release.model_version,
            "runtime": release.runtime.name,
            "runtime_reason": release.runtime_reason,
        }

    def loaded(self) -> tuple[LoadedRelease, Decoder, MicroBatcher]:
        if self.release is None or self.decoder is None or self._batcher is None:
            reason = "failed to load; see the server log" if self.failure else "is still loading"
            raise RequestError(503, "not_ready", f"the model {reason}")
        return self.release, self.decoder, self._batcher

    def _model_for(self, path: str) -> tuple[LoadedRelease, Decoder, MicroBatcher]:
        """The loaded model, if `path` names it (404 otherwise)."""
        parts = path.split("/")
        return self.model(parts[3], parts[5] if len(parts) > 5 and parts[4] == "versions" else "")

    def model(self, name: str, version: str = "") -> tuple[LoadedRelease, Decoder, MicroBatcher]:
        """The loaded model, if it is `name` (and `version`, when given); 404 otherwise."""
        loaded = self.loaded()
        release = loaded[0]
        if name != release.model_name or (version and version != release.model_version):
            raise RequestError(
                404,
                "model_not_found",
                f"this server serves model '{release.model_name}' version '{release.model_version}' only",
            )
        return loaded

    async def _body(self, scope: Scope, receive: Receive) -> tuple[list[bytes], str, bytes | None]:
        """The body as it arrived, in chunks (413 before reading when Content-Length is over the
        limit), its Content-Type, and the binary data extension's Inference-Header-Content-Length,
        if sent."""
        limit = self.settings.max_body_bytes
        content_type = ""
        header_length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise RequestError(400, "invalid_header", "Content-Length is not a number") from None
                if declared > limit:
                    raise RequestError(
                        413,
                        "body_too_large",
                        f"the body has {declared} bytes; this server accepts at most {limit}",
                    )
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == HEADER_LENGTH:
                header_length = value
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "body_too_large", f"the body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        scope[_BODY_READ] = True
        return chunks, content_type, header_length

    async def predict(self, batcher: MicroBatcher, X: np.ndarray) -> Prediction:
        self.metrics.request_rows.observe(len(X))
        result = await batcher.predict(X)
        if self.drift is not None:
            self.drift.record(X, result.values)
        return result

    async def _invocations(self, scope: Scope, receive: Receive) -> _Reply:
        release, decoder, batcher = self.loaded()
        self._arriving += 1
        try:
            chunks, content_type, _ = await self._body(scope, receive)
            if not content_type:
                raise RequestError(
                    415, "unsupported_media_type", "set Content-Type to application/json or text/csv"
                )
            query = scope.get("query_string", b"")
            decoded = decoder.invocations(
                _joined(chunks), content_type, _query_probabilities(query) if query else False
            )
        finally:
            self._arriving -= 1
        self.metrics.observe_encoding("http", "csv" if decoded.csv else "json")
        if decoded.probabilities and release.classes is None:
            raise RequestError(400, "probabilities_unavailable", "probabilities exist for classifiers only")
        result = await self.predict(batcher, decoded.X)
        out: dict[str, Any] = {"predictions": _plain(result.values)}
        if decoded.probabilities:
            out["probabilities"] = result.probabilities
            out["classes"] = release.classes
        return 200, orjson.dumps(out, option=_NUMPY), _JSON, None

    async def _v2_infer(self, scope: Scope, receive: Receive) -> _Reply:
        release, decoder, batcher = self._model_for(scope["path"])
        self._arriving += 1
        try:
            chunks, content_type, header_length = await self._body(scope, receive)
            media = content_type.partition(";")[0].strip().lower()
            if header_length is not None:
                if media and media not in (_JSON.decode(), _OCTETS.decode()):
                    raise RequestError(
                        415,
                        "unsupported_media_type",
                        "a binary data request takes application/octet-stream (or application/json)",
                    )
                header, binary = split_binary_body(chunks, header_length)
                request = decoder.v2(header, binary)
            else:
                if media and media != "application/json":
                    raise RequestError(
                        415,
                        "unsupported_media_type",
                        "the inference protocol takes application/json, or binary tensors with an "
                        "Inference-Header-Content-Length header",
                    )
                request = decoder.v2(_joined(chunks))
        finally:
            self._arriving -= 1
        self.metrics.observe_encoding("http", "json" if header_length is None else "binary")
        result = await self.infer(release, batcher, request)
        header_json, blobs = v2_response(release, request, result)
        if not blobs:
            return 200, header_json, _JSON, None
        return (
            200,
            b"".join((header_json, *blobs)),
            _OCTETS,
            [(HEADER_LENGTH, str(len(header_json)).encode())],
        )

    async def infer(self, release: LoadedRelease, batcher: MicroBatcher, request: V2Request) -> Prediction:
        """A decoded V2 request through the batcher (shared by HTTP and gRPC)."""
        if "predict_proba" in request.outputs and release.classes is None:
            raise RequestError(400, "probabilities_unavailable", "predict_proba exists for classifiers only")
        return await self.predict(batcher, request.X)


def _joined(chunks: list[bytes]) -> bytes:
    # (a body read in place is a memoryview: model.server.http_protocol)
    return chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks)


def server_metadata() -> dict[str, Any]:
    return {"name": _SERVER_NAME, "version": "1", "extensions": ["binary_tensor_data"]}


def v2_outputs(request: V2Request, result: Prediction) -> list[tuple[str, list[int], np.ndarray]]:
    """The requested outputs as (name, shape, values), values flat in row-major order."""
    rows = len(request.X)
    outputs = []
    for name in request.outputs:
        if name == "predict":
            outputs.append((name, [rows], result.values))
        else:
            proba = result.probabilities
            assert proba is not None
            outputs.append((name, [rows, proba.shape[1]], proba.reshape(-1)))
    return outputs


def v2_response(release: LoadedRelease, request: V2Request, result: Prediction) -> tuple[bytes, list[bytes]]:
    """The V2 JSON answer, and the raw bytes of the outputs asked for in binary (which the JSON
    then lists with their binary_data_size instead of data, in the same order)."""
    outputs = []
    blobs = []
    for name, shape, values in v2_outputs(request, result):
        if name in request.binary_outputs:
            raw = encode_output(values)
            blobs.append(raw.data)
            outputs.append(
                {
                    "name": name,
                    "datatype": raw.datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw.data)},
                }
            )
        else:
            outputs.append(
                {"name": name, "datatype": output_datatype(values), "shape": shape, "data": _plain(values)}
            )
    out: dict[str, Any] = {
        "model_name": release.model_name,
        "model_version": release.model_version,
        "outputs": outputs,
    }
    if request.request_id is not None:
        out["id"] = request.request_id
    return orjson.dumps(out, option=_NUMPY), blobs


def v2_metadata(release: LoadedRelease) -> dict[str, Any]:
    inputs = [
        {"name": c.name, "datatype": _V2_DATATYPE[c.kind], "shape": [-1]} for c in release.schema.columns
    ]
    outputs = [{"name": "predict", "datatype": "INT64" if release.classes else "FP64", "shape": [-1]}]
    if release.classes is not None:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(release.classes)]})
    return {
        "name": release.model_name,
        "versions": [release.model_version],
        "platform": "sklearn",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "release_id": release.release_id,
            "runtime": release.runtime.name,
            "classes": list(release.classes) if release.classes is not None else None,
            "tensor_input": {"datatype": "FP64", "shape": [-1, release.schema.width]},
        },
    }


def _require(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise RequestError(405, "method_not_allowed", f"use {' or '.join(allowed)} on this route")


def _query_probabilities(query: bytes) -> bool:
    try:
        params = parse_qs(query.decode("ascii"), strict_parsing=False)
    except UnicodeDecodeError:
        raise RequestError(400, "invalid_query", "the query string is not ASCII") from None
    values = params.get("probabilities")
    if values is None:
        return False
    if values[-1] not in ("true", "false"):
        raise RequestError(
            400, "invalid_params", "probabilities must be true or false", field="probabilities"
        )
    return values[-1] == "true"


def _plain(values: np.ndarray) -> Any:
    return values.tolist() if values.dtype.kind == "O" else values


async def _fold_every(drift: DriftMonitor, seconds: float) -> None:
    """A worker's pending drift rows reach its siblings' scrapes within `seconds`."""
    while True:
        await asyncio.sleep(seconds)
        drift.fold()


def create_app(settings: ServerSettings, loader: Loader | None = None) -> ServerApp:
    """The app factory: the model loads in the background once the lifespan starts."""
    return ServerApp(settings, loader)
