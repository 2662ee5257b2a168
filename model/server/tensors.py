"""Raw tensors of the Open Inference Protocol: the HTTP binary data extension and gRPC raw contents.

Both carry a tensor as its little-endian bytes, row-major, with no per-value framing (BYTES
tensors: each element a 4-byte little-endian length, then the bytes). So a large batch costs
one `np.frombuffer` instead of parsing thousands of JSON numbers, and an answer is one
`tobytes`. Sizes are checked against the declared shape before a byte is interpreted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from model.server.errors import RequestError

__all__ = [
    "HEADER_LENGTH",
    "RAW_DTYPES",
    "RawOutput",
    "binary_body_buffer",
    "encode_output",
    "output_datatype",
    "split_binary_body",
]

HEADER_LENGTH = b"inference-header-content-length"
"""The request/response header that says how many leading body bytes are the JSON header."""

RAW_DTYPES: dict[str, np.dtype[np.generic]] = {
    "FP64": np.dtype("<f8"),
    "FP32": np.dtype("<f4"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
}
"""Input datatypes this server takes as raw bytes (the numeric ones a signature column can hold)."""

_OUTPUT_DTYPES = {
    "INT64": np.dtype("<i8"),
    "UINT64": np.dtype("<u8"),
    "FP64": np.dtype("<f8"),
    "BOOL": np.dtype("?"),
}
_KIND_DATATYPE = {"i": "INT64", "u": "UINT64", "f": "FP64", "b": "BOOL"}
_ALIGNMENT = 64
"""Where a binary section starts in the buffer it is read into: a cache line, and any dtype's."""


@dataclass(frozen=True)
class RawOutput:
    datatype: str
    data: bytes


def output_datatype(values: np.ndarray) -> str:
    """The V2 datatype of a prediction array: numbers by kind, anything else (strings) BYTES."""
    return _KIND_DATATYPE.get(values.dtype.kind, "BYTES")


def encode_output(values: np.ndarray) -> RawOutput:
    """A prediction array as V2 raw bytes (row-major, little-endian; BYTES length-prefixed)."""
    datatype = output_datatype(values)
    if datatype != "BYTES":
        return RawOutput(datatype, np.ascontiguousarray(values, dtype=_OUTPUT_DTYPES[datatype]).tobytes())
    parts = []
    for value in values.reshape(-1).tolist():
        encoded = str(value).encode("utf-8")
        parts.append(len(encoded).to_bytes(4, "little"))
        parts.append(encoded)
    return RawOutput(datatype, b"".join(parts))


def binary_body_buffer(
    size: int, header_length: int, chunks: Iterable[bytes | memoryview] = ()
) -> memoryview:
    """A writable buffer for a `size`-byte body whose binary section starts after `header_length`
    bytes, placed so that the section starts on a 64-byte boundary, `chunks` copied to its start.
    The first tensor read from it is then aligned, and so is each one after tensors of its item
    size: the decoder takes float64 rows as they are instead of copying them again, and checks
    them without numpy reading unaligned values through a buffer."""
    buffer = np.empty(size + _ALIGNMENT, dtype=np.uint8)
    start = -(buffer.ctypes.data + header_length) % _ALIGNMENT
    body = buffer.data[start : start + size]
    position = 0
    for chunk in chunks:
        body[position : position + len(chunk)] = chunk
        position += len(chunk)
    return body


def split_binary_body(chunks: Sequence[bytes | memoryview], declared: bytes) -> tuple[bytes, memoryview]:
    """The JSON header and the binary section of a body (as received, in chunks) sent with
    Inference-Header-Content-Length.

    A body that came as one `binary_body_buffer` (model.server.http_protocol reads it so) is
    split where it is; chunks are copied into a new one (joining them costs that copy anyway).
    """
    try:
        length = int(declared)
    except ValueError:
        raise RequestError(400, "invalid_header", "Inference-Header-Content-Length is not a number") from None
    size = sum(map(len, chunks))
    if not 0 < length <= size:
        raise RequestError(
            400,
            "invalid_header",
            f"Inference-Header-Content-Length is {length}, but the body has {size} bytes; it must "
            "give the length of the JSON header that starts the body",
        )
    if len(chunks) == 1 and _placed(chunks[0], length):
        body = memoryview(chunks[0])
    else:
        body = binary_body_buffer(size, length, chunks)
    return bytes(body[:length]), body[length:]


def _placed(chunk: bytes | memoryview, header_length: int) -> bool:
    """Whether `chunk` is a writable buffer whose binary section is where binary_body_buffer puts it."""
    if not isinstance(chunk, memoryview) or chunk.readonly:
        return False
    return (np.frombuffer(chunk, dtype=np.uint8).ctypes.data + header_length) % _ALIGNMENT == 0
