"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`) on its own port.

It runs on the HTTP app's event loop, so a gRPC request joins the same batches as HTTP ones
and passes the same decoder (same checks, same error codes, same row limit), the same
metrics (protocol="grpc") and the same drain. The message size limit is gRPC's own receive
limit, enforced before a message is parsed; the row limit is checked from the tensor shapes
before any tensor data is read.

The stubs come from `open-inference-grpc`, the Open Inference Protocol working group's
package of code generated from the protocol's published `open_inference_grpc.proto` (the
same package, service, messages and field numbers as KServe's `grpc_predict_v2.proto` and the
subset of Triton's `grpc_service.proto` it implements): nothing here is hand-written wire
code, and no generated code is kept in this repository.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from grpc import aio
from open_inference.grpc import protocol as pb
from open_inference.grpc.service import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)

from model.server.app import server_metadata, v2_metadata, v2_outputs
from model.server.decode import V2_OUTPUTS, V2_PARAM_KEYS, TensorIn, tensor_kind, tensor_shape
from model.server.errors import RequestError, internal_error
from model.server.tensors import RAW_DTYPES, encode_output, output_datatype

if TYPE_CHECKING:
    from model.server.app import ServerApp

__all__ = ["GrpcServer", "start_grpc_server"]

log = logging.getLogger("mlops.server")

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Typed contents by datatype: where a client that does not send raw bytes puts the values.
_CONTENTS = {
    "FP64": "fp64_contents",
    "FP32": "fp32_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
}
_OUTPUT_CONTENTS = {
    "INT64": "int64_contents",
    "UINT64": "uint64_contents",
    "FP64": "fp64_contents",
    "BOOL": "bool_contents",
}
_ALL_CONTENTS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)
ERROR_CODE_KEY = "mlops-error-code"
"""Trailing metadata key with the machine-readable error code (the same codes as HTTP)."""


def _bad(code: str, message: str, field: str | None = None) -> RequestError:
    return RequestError(400, code, message, field=field)


class _Servicer(GRPCInferenceServiceServicer):
    def __init__(self, app: ServerApp) -> None:
        self._app = app

    async def _call(
        self, rpc: str, context: aio.ServicerContext, handler: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Run one RPC with the HTTP path's metrics, time limit and error handling: a RequestError
        becomes the matching status, its message and its code in trailing metadata; anything else
        INTERNAL. A call the client cancelled (or whose own deadline passed) counts as CANCELLED."""
        metrics = self._app.metrics
        started = time.perf_counter()
        self._app.grpc_calls(+1)
        metrics.in_flight.inc()
        status = grpc.StatusCode.OK
        error: RequestError | None = None
        try:
            return await self._app.within_limit(handler())
        except RequestError as exc:
            error = exc
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("unhandled error on gRPC %s", rpc)
            error = internal_error()
        finally:
            if error is not None:
                status = _STATUS.get(error.status, grpc.StatusCode.INTERNAL)
                metrics.observe_error(rpc, error.code, "grpc")
            metrics.in_flight.dec()
            self._app.grpc_calls(-1)
            metrics.observe_request(rpc, "RPC", status.name, time.perf_counter() - started, "grpc")
        context.set_trailing_metadata(((ERROR_CODE_KEY, error.code),))
        await context.abort(status, error.message)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> Any:
        return await self._call("ServerLive", context, self._live)

    async def _live(self) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> Any:
        return await self._call("ServerReady", context, self._ready)

    async def _ready(self) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._app.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> Any:
        async def handle() -> pb.ModelReadyResponse:
            self._app.model(request.name, request.version)
            return pb.ModelReadyResponse(ready=self._app.ready)

        return await self._call("ModelReady", context, handle)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: aio.ServicerContext) -> Any:
        async def handle() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**server_metadata())

        return await self._call("ServerMetadata", context, handle)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: aio.ServicerContext) -> Any:
        async def handle() -> pb.ModelMetadataResponse:
            release = self._app.model(request.name, request.version)[0]
            meta = v2_metadata(release)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
                properties={"release_id": release.release_id, "runtime": release.runtime.name},
            )

        return await self._call("ModelMetadata", context, handle)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> Any:
        return await self._call("ModelInfer", context, lambda: self._infer(request))

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        app = self._app
        release, decoder, batcher = app.model(request.model_name, request.model_version)
        if len(request.id) > 256:
            raise _bad("invalid_structure", "id must be a string of at most 256 characters", "id")
        probabilities = _parameters(request.parameters)
        outputs = _requested_outputs(request.outputs, probabilities)
        if not request.inputs:
            raise _bad("missing_data", "inputs must hold at least one tensor", "inputs")
        raw = len(request.raw_input_contents) > 0
        if raw and len(request.raw_input_contents) != len(request.inputs):
            raise _bad(
                "invalid_structure",
                f"raw_input_contents has {len(request.raw_input_contents)} entries for "
                f"{len(request.inputs)} inputs; send one per input, or none and use contents",
                "raw_input_contents",
            )
        tensors = []
        for i, tensor in enumerate(request.inputs):
            shape = tensor_shape(list(tensor.shape), i)
            kind = tensor_kind(tensor.datatype, i)
            has_contents = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
            if raw:
                if has_contents:
                    raise _bad(
                        "invalid_structure",
                        f"inputs[{i}] has contents while the request uses raw_input_contents; "
                        "send every input one way",
                        f"inputs[{i}]",
                    )
                data = decoder.raw_tensor(request.raw_input_contents[i], shape, tensor.datatype, i)
            else:
                data = _typed_contents(decoder, tensor, shape, i)
            tensors.append(TensorIn(tensor.name, shape, kind, data))
        app.metrics.observe_encoding("grpc", "raw" if raw else "typed")
        v2 = decoder.v2_tensors(tensors, outputs, request.id or None)
        result = await app.infer(release, batcher, v2)
        response = pb.ModelInferResponse(
            model_name=release.model_name, model_version=release.model_version, id=request.id
        )
        for name, shape, values in v2_outputs(v2, result):
            if raw:
                encoded = encode_output(values)
                response.outputs.add(name=name, datatype=encoded.datatype, shape=shape)
                response.raw_output_contents.append(encoded.data)
                continue
            datatype = output_datatype(values)
            output = response.outputs.add(name=name, datatype=datatype, shape=shape)
            if datatype == "BYTES":
                output.contents.bytes_contents.extend(str(v).encode("utf-8") for v in values.tolist())
            else:
                getattr(output.contents, _OUTPUT_CONTENTS[datatype]).extend(values.tolist())
        return response


def _parameters(parameters: Any) -> bool:
    """Request parameters: `probabilities` (bool); `binary_data_output` is accepted and moot
    (gRPC answers raw bytes whenever the request sent them)."""
    for position, key in enumerate(sorted(parameters)):
        if key not in V2_PARAM_KEYS:
            raise _bad(
                "unknown_param",
                f"parameters[{position}] is an unknown key; allowed: {', '.join(sorted(V2_PARAM_KEYS))}",
                f"parameters[{position}]",
            )
        if parameters[key].WhichOneof("parameter_choice") != "bool_param":
            raise _bad("invalid_params", f"parameters.{key} must be a bool_param", key)
    return "probabilities" in parameters and bool(parameters["probabilities"].bool_param)


def _requested_outputs(outputs: Any, probabilities: bool) -> tuple[str, ...]:
    if not outputs:
        return V2_OUTPUTS if probabilities else ("predict",)
    names: list[str] = []
    for position, output in enumerate(outputs):
        if output.name not in V2_OUTPUTS:
            raise _bad(
                "unknown_output",
                f"outputs[{position}] names an unknown output; allowed: {', '.join(V2_OUTPUTS)}",
                f"outputs[{position}]",
            )
        for key in output.parameters:
            if key != "binary_data":
                raise _bad(
                    "unknown_param",
                    f"outputs[{position}].parameters has an unknown key; allowed: binary_data",
                    f"outputs[{position}]",
                )
        names.append(output.name)
    return tuple(dict.fromkeys(names))


def _typed_contents(decoder: Any, tensor: Any, shape: list[int], i: int) -> np.ndarray:
    """Values sent in the typed contents field that matches the datatype (row limit checked first)."""
    decoder.check_rows(shape[0])
    contents = tensor.contents
    field = _CONTENTS[tensor.datatype]
    for other in _ALL_CONTENTS:
        if other != field and len(getattr(contents, other)):
            raise _bad(
                "type_mismatch",
                f"inputs[{i}] is {tensor.datatype}, so its values belong in contents.{field}",
                f"inputs[{i}]",
            )
    return np.array(getattr(contents, field), dtype=RAW_DTYPES[tensor.datatype])


class GrpcServer:
    """The gRPC server of one app: started with the app's lifespan, stopped in its drain."""

    def __init__(self, server: aio.Server, port: int) -> None:
        self._server = server
        self.port = port
        """The port bound (the configured one, or the one picked for port 0 in tests)."""

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs at once and give in-flight ones up to `grace` seconds."""
        await self._server.stop(grace)


async def start_grpc_server(app: ServerApp, host: str, port: int, max_message_bytes: int) -> GrpcServer:
    """Bind and start the gRPC service for `app`; raises RuntimeError if the port cannot be bound."""
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # Workers (--workers > 1) share the port; a single server must own it.
            ("grpc.so_reuseport", int(app.settings.worker_index is not None)),
        ]
    )
    add_GRPCInferenceServiceServicer_to_server(_Servicer(app), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise RuntimeError(f"could not bind the gRPC port {host}:{port}: {exc}") from None
    if bound == 0:
        raise RuntimeError(f"could not bind the gRPC port {host}:{port}")
    await server.start()
    return GrpcServer(server, bound)
