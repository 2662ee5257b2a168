"""Request bodies to a float64 matrix in signature order, strictly, without pandas.

The fast path hands orjson's lists straight to numpy and checks the result with vectorised
tests; anything it cannot vouch for (booleans, nulls, strings, ragged or oddly shaped rows)
goes to a per-value path whose only job is to find the first bad value and name it. So a
valid request pays for numpy, an invalid one gets a precise 400, and both give the same
answer whatever the estimator.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from model.server.errors import RequestError, clean_name
from model.server.schema import FLOAT32_MAX as _FLOAT32_MAX
from model.server.schema import Column, ColumnKind, InputSchema, NonFinite, check_value
from model.server.tensors import RAW_DTYPES

__all__ = [
    "V2_KINDS",
    "V2_OUTPUTS",
    "V2_PARAM_KEYS",
    "Decoded",
    "Decoder",
    "TensorIn",
    "V2Request",
    "load_json",
    "tensor_kind",
    "tensor_shape",
]

FORMAT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_PARAM_KEYS = frozenset({"probabilities"})
V2_PARAM_KEYS = frozenset({"probabilities", "binary_data_output"})
"""Request parameters the V2 protocol takes (JSON over HTTP and gRPC alike)."""
_V2_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_V2_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})
V2_OUTPUTS = ("predict", "predict_proba")
"""Outputs a V2 request may name; with probabilities and none named, both in this order."""
V2_KINDS: dict[str, ColumnKind] = {"FP64": "double", "FP32": "float", "INT64": "long", "INT32": "integer"}
_NARROWNESS: dict[ColumnKind, int] = {"double": 0, "float": 1, "long": 2, "integer": 3}
_CSV_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_CSV_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


@dataclass(frozen=True)
class Decoded:
    X: np.ndarray
    """float64, one row per instance, columns in signature order."""
    probabilities: bool
    csv: bool = False


@dataclass(frozen=True)
class V2Request:
    X: np.ndarray
    outputs: tuple[str, ...]
    request_id: str | None
    binary_outputs: frozenset[str] = frozenset()
    """Outputs to answer as raw bytes (the HTTP binary data extension)."""


@dataclass(frozen=True)
class TensorIn:
    """One input tensor as JSON, the binary data extension or gRPC delivered it."""

    name: str
    shape: list[int]
    kind: ColumnKind
    data: Any
    """JSON values (flat or nested lists), or a flat numpy array decoded from raw bytes."""


@dataclass(frozen=True)
class _V2Params:
    probabilities: bool = False
    binary_output: bool = False


def _bad(code: str, message: str, **where: Any) -> RequestError:
    return RequestError(400, code, message, **where)


def _flags(params: Any, where: str, allowed: frozenset[str]) -> dict[str, bool]:
    """A request's parameters object: only `allowed` keys, each true or false."""
    if type(params) is not dict:
        raise _bad("invalid_params", f"{where} must be an object, got {_type_name(params)}", field=where)
    for position, (key, value) in enumerate(params.items()):
        if key not in allowed:
            raise _bad(
                "unknown_param",
                f"{where}[{position}] is an unknown key; allowed: {', '.join(sorted(allowed))}",
                field=f"{where}[{position}]",
            )
        if type(value) is not bool:
            message = f"{where}.{key} must be true or false, got {_type_name(value)}"
            raise _bad("invalid_params", message, field=key)
    return params


def load_json(body: bytes) -> Any:
    """orjson first; the stdlib only to tell NaN/Infinity (and the row holding them) from garbage."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("invalid_utf8", f"the body is not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        return json.loads(text, parse_constant=NonFinite)
    except (ValueError, RecursionError):
        raise _bad("invalid_json", f"the body is not valid JSON: {reason}") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


class Decoder:
    """Decodes the MLflow scoring protocol and the Open Inference Protocol for one signature."""

    def __init__(self, schema: InputSchema, max_rows: int) -> None:
        self.schema = schema
        self.max_rows = max_rows
        # Columns narrowed to a V2 tensor's datatype, built once per (columns, datatype); the
        # whole signature's by datatype alone: hashing its columns (a dataclass hash each) was 8%
        # of a single-row request's decoding.
        self._narrowed: dict[tuple[tuple[Column, ...], ColumnKind], InputSchema] = {}
        self._narrowed_all: dict[ColumnKind, InputSchema] = {}

    def _narrowed_schema(self, columns: tuple[Column, ...], kind: ColumnKind) -> InputSchema:
        """The tensor's datatype narrows what each column accepts, never widens it."""
        whole = columns is self.schema.columns
        schema = self._narrowed_all.get(kind) if whole else self._narrowed.get((columns, kind))
        if schema is None:
            schema = InputSchema(tuple(Column(c.name, _narrower(c.kind, kind)) for c in columns))
            if whole:
                self._narrowed_all[kind] = schema
            else:
                self._narrowed[columns, kind] = schema
        return schema

    # -- shared checks -------------------------------------------------------------------

    def check_rows(self, count: int) -> None:
        if count == 0:
            raise _bad("empty_data", "the request holds no rows; send at least one")
        if count > self.max_rows:
            raise RequestError(
                413,
                "too_many_rows",
                f"the request holds {count} rows; this server accepts at most {self.max_rows} per request",
            )

    def _columns_order(
        self, given: list[Any], row: int | None = None, label: str = "columns"
    ) -> list[int] | None:
        """Positions of the schema's columns in `given`; None when `given` is already in order.

        Names the request got wrong are reported by position, never echoed back.
        """
        schema = self.schema
        where = "" if row is None else f"row {row}: "
        seen: set[str] = set()
        unexpected: int | None = None
        for position, name in enumerate(given):
            if type(name) is not str:
                raise _bad(
                    "invalid_column",
                    f"{where}{label}[{position}] must be a string, got {_type_name(name)}",
                    field=f"{label}[{position}]",
                    row=row,
                )
            if name in seen:
                known = name in schema.index
                shown = f"column '{clean_name(name)}'" if known else f"{label}[{position}]"
                raise _bad(
                    "duplicate_column",
                    f"{where}{shown} repeats an earlier name",
                    field=name if known else f"{label}[{position}]",
                    row=row,
                )
            seen.add(name)
            if name not in schema.index and unexpected is None:
                unexpected = position
        missing = next((n for n in schema.names if n not in seen), None)
        if missing is not None:
            extra = (
                ""
                if unexpected is None
                else f"; {label}[{unexpected}] has a name the signature does not know"
            )
            raise _bad(
                "missing_column",
                f"{where}missing column '{clean_name(missing)}'{extra} "
                f"(the signature has {schema.width} columns; GET /v2/models/<name> lists them)",
                field=missing,
                row=row,
            )
        if unexpected is not None:
            raise _bad(
                "unexpected_column",
                f"{where}unexpected column: {label}[{unexpected}] has a name that is not in the model's "
                f"signature (it has {schema.width} columns)",
                field=f"{label}[{unexpected}]",
                row=row,
            )
        order = [schema.index[name] for name in given]
        if order == list(range(schema.width)):
            return None
        positions = [0] * schema.width
        for position, column in enumerate(order):
            positions[column] = position
        return positions

    def _finish(self, block: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(block, dtype=np.float64)

    def _rows(self, rows: list[Any], order: list[int] | None, fast: bool) -> np.ndarray:
        """A list of value lists (in `order`) to a checked matrix in schema order."""
        width = self.schema.width
        if fast:
            block = _numeric_array(rows)
            if block is not None and block.ndim == 2 and block.shape[1] == width:
                if order is not None:
                    block = block[:, order]
                if self.schema.check_block(block):
                    return self._finish(block)
        return self._slow_rows(rows, order)

    def _slow_rows(self, rows: list[Any], order: list[int] | None) -> np.ndarray:
        schema = self.schema
        width = schema.width
        out = np.empty((len(rows), width), dtype=np.float64)
        columns = schema.columns if order is None else [schema.columns[i] for i in self._inverse(order)]
        for i, row in enumerate(rows):
            if type(row) is not list:
                raise _bad(
                    "invalid_row",
                    f"row {i}: expected an array of {width} values, got {_type_name(row)}",
                    row=i,
                )
            if len(row) != width:
                raise _bad(
                    "ragged_row",
                    f"row {i} has {len(row)} values; expected {width}, one per column",
                    row=i,
                )
            for j, value in enumerate(row):
                out[i, j] = check_value(value, columns[j], i)
        return out if order is None else out[:, order]

    @staticmethod
    def _inverse(order: list[int]) -> list[int]:
        inverse = [0] * len(order)
        for column, position in enumerate(order):
            inverse[position] = column
        return inverse

    # -- MLflow scoring protocol ---------------------------------------------------------

    def invocations(self, body: bytes, content_type: str, probabilities: bool) -> Decoded:
        media, _, params = content_type.partition(";")
        media = media.strip().lower()
        if media == "text/csv":
            return Decoded(self._csv(body), probabilities, csv=True)
        if media != "application/json":
            raise RequestError(
                415,
                "unsupported_media_type",
                "send Content-Type application/json (MLflow's dataframe_split, dataframe_records, "
                "instances or inputs) or text/csv with a header row",
            )
        charset = params.strip().lower()
        if charset and charset.replace(" ", "") not in ("charset=utf-8", "charset=utf8"):
            raise RequestError(415, "unsupported_media_type", "JSON bodies must be UTF-8 (charset=utf-8)")
        if len(body) >= _SIMDJSON_MIN_BYTES and not self.schema.needs_checks:
            decoded = self._split_numbers(body, probabilities)
            if decoded is not None:
                return decoded
        payload = load_json(body)
        if type(payload) is not dict:
            raise _bad(
                "invalid_structure",
                f"the body must be a JSON object with one of the keys {', '.join(FORMAT_KEYS)}; "
                f"got {_type_name(payload)}",
            )
        formats = [key for key in FORMAT_KEYS if key in payload]
        for position, key in enumerate(payload):
            if key not in FORMAT_KEYS and key != "params":
                raise _bad(
                    "unknown_key",
                    f"body[{position}] is an unknown key; allowed: {', '.join(FORMAT_KEYS)} and params",
                    field=f"body[{position}]",
                )
        if not formats:
            raise _bad("missing_format", f"the body needs exactly one of the keys {', '.join(FORMAT_KEYS)}")
        if len(formats) > 1:
            raise _bad(
                "multiple_formats",
                f"the body has {' and '.join(formats)}; send exactly one input format",
                field=formats[1],
            )
        if "params" in payload:
            probabilities = self._params(payload["params"], "params") or probabilities
        # JSON true/false would become 1.0/0.0 inside numpy: let the per-value path reject them.
        fast = b"true" not in body and b"false" not in body
        key = formats[0]
        data = payload[key]
        if key == "dataframe_split":
            X = self._split(data, fast)
        elif key == "dataframe_records":
            X = self._records(data, fast, key)
        elif key == "inputs" and type(data) is dict:
            X = self._columnar(data, fast)
        else:
            X = self._instances(data, fast, key)
        return Decoded(X, probabilities)

    def _split_numbers(self, body: bytes, probabilities: bool) -> Decoded | None:
        """A large, valid `dataframe_split` body with its rows read by simdjson straight into one
        float64 array; None for anything else (another format, a duplicate key, a bad value, a
        ragged row), which the general path then decodes and, if wrong, names precisely."""
        try:
            doc = simdjson.Parser().parse(body)
        except _SIMDJSON_ERRORS:
            return None
        if type(doc) is not simdjson.Object:
            return None
        keys = list(doc.keys())
        if (
            "dataframe_split" not in keys
            or not set(keys) <= {"dataframe_split", "params"}
            or len(set(keys)) < len(keys)
        ):
            return None
        split = doc["dataframe_split"]
        if type(split) is not simdjson.Object:
            return None
        parts = list(split.keys())
        if not set(parts) <= _SPLIT_KEYS or len(set(parts)) < len(parts) or "data" not in parts:
            return None
        data = split["data"]
        if type(data) is not simdjson.Array:
            return None
        rows, width = len(data), self.schema.width
        if not 0 < rows <= self.max_rows:
            return None
        if "params" in keys:
            probabilities = self._params(_plain_json(doc["params"]), "params") or probabilities
        order = None
        if "columns" in parts:
            columns = _plain_json(split["columns"])
            if type(columns) is not list:
                return None
            order = self._columns_order(columns)
        if "index" in parts:
            index = split["index"]
            if type(index) is not simdjson.Array or len(index) != rows:
                return None
        try:
            numbers = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
        except (TypeError, ValueError, RuntimeError):
            return None
        # as_buffer flattens any nesting, so the table's shape is checked apart: as many brackets
        # as the arrays a table has (no array in a cell; a bracket inside a string just sends the
        # body the general way), and every row an array of exactly `width` numbers.
        arrays = 1 + rows + ("columns" in parts) + ("index" in parts)
        if (
            body.count(b"[") != arrays
            or numbers.size != rows * width
            or not all(type(row) is simdjson.Array and len(row) == width for row in data)
        ):
            return None
        block = numbers.reshape(rows, width)
        if order is not None:
            block = block[:, order]
        if not self.schema.check_block(block):
            return None
        return Decoded(np.ascontiguousarray(block), probabilities)

    def _params(self, params: Any, where: str) -> bool:
        return _flags(params, where, _PARAM_KEYS).get("probabilities", False)

    def _split(self, data: Any, fast: bool) -> np.ndarray:
        if type(data) is not dict:
            raise _bad(
                "invalid_structure",
                f"dataframe_split must be an object with columns and data, got {_type_name(data)}",
                field="dataframe_split",
            )
        for position, key in enumerate(data):
            if key not in _SPLIT_KEYS:
                raise _bad(
                    "unknown_key",
                    f"dataframe_split[{position}] is an unknown key; allowed: columns, data, index",
                    field=f"dataframe_split[{position}]",
                )
        if "data" not in data:
            raise _bad("missing_data", "dataframe_split needs a data array of rows", field="data")
        rows = data["data"]
        if type(rows) is not list:
            raise _bad(
                "invalid_structure",
                f"dataframe_split.data must be an array, got {_type_name(rows)}",
                field="data",
            )
        order = None
        if "columns" in data:
            columns = data["columns"]
            if type(columns) is not list:
                raise _bad(
                    "invalid_structure",
                    f"dataframe_split.columns must be an array of names, got {_type_name(columns)}",
                    field="columns",
                )
            order = self._columns_order(columns)
        self.check_rows(len(rows))
        if "index" in data:
            index = data["index"]
            if type(index) is not list or len(index) != len(rows):
                raise _bad(
                    "invalid_structure",
                    f"dataframe_split.index must be an array with one entry per row ({len(rows)})",
                    field="index",
                )
        return self._rows(rows, order, fast)

    def _records(self, records: Any, fast: bool, key: str) -> np.ndarray:
        if type(records) is not list:
            raise _bad("invalid_structure", f"{key} must be an array of objects", field=key)
        self.check_rows(len(records))
        names = self.schema.names
        width = self.schema.width
        if fast:
            try:
                rows = [[record[name] for name in names] for record in records if len(record) == width]
            except (KeyError, TypeError):
                rows = None
            if rows is not None and len(rows) == len(records):
                return self._rows(rows, None, True)
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise _bad("invalid_row", f"row {i}: expected an object, got {_type_name(record)}", row=i)
            self._columns_order(list(record), row=i, label="keys")
        return self._rows([[record[name] for name in names] for record in records], None, False)

    def _instances(self, data: Any, fast: bool, key: str) -> np.ndarray:
        if type(data) is not list:
            raise _bad(
                "invalid_structure",
                f"{key} must be an array of rows (arrays in signature order, or objects)",
                field=key,
            )
        self.check_rows(len(data))
        if type(data[0]) is dict:
            return self._records(data, fast, key)
        return self._rows(data, None, fast)

    def _columnar(self, data: dict[str, Any], fast: bool) -> np.ndarray:
        self._columns_order(list(data), label="inputs")
        columns = [data[name] for name in self.schema.names]
        length = None
        for name, values in zip(self.schema.names, columns, strict=True):
            if type(values) is not list:
                raise _bad(
                    "invalid_structure",
                    f"inputs['{clean_name(name)}'] must be an array of values, got {_type_name(values)}",
                    field=name,
                )
            if length is None:
                length = len(values)
                self.check_rows(length)
            elif len(values) != length:
                raise _bad(
                    "ragged_row",
                    f"column '{clean_name(name)}' has {len(values)} values; expected {length} like the first",
                    field=name,
                )
        if fast:
            block = _numeric_array(columns)
            if block is not None and block.ndim == 2:
                block = block.T
                if self.schema.check_block(block):
                    return self._finish(block)
        rows = [list(row) for row in zip(*columns, strict=True)]
        return self._slow_rows(rows, None)

    def _csv(self, body: bytes) -> np.ndarray:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(
                "invalid_utf8", f"the body is not valid UTF-8 (bad byte at offset {exc.start})"
            ) from None
        try:
            records = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
        except csv.Error as exc:
            raise _bad("invalid_csv", f"the body is not valid CSV: {exc}") from None
        records = [r for r in records if r]
        if not records:
            raise _bad("empty_data", "the CSV body is empty; send a header row and at least one row")
        order = self._columns_order(records[0])
        rows = records[1:]
        self.check_rows(len(rows))
        return self._slow_rows([[_csv_value(cell.strip()) for cell in row] for row in rows], order)

    # -- Open Inference Protocol (KServe V2) --------------------------------------------

    def v2(self, body: bytes, binary: memoryview | None = None) -> V2Request:
        """A JSON inference request; `binary` is the body's binary section under the binary data
        extension (the bytes after Inference-Header-Content-Length), holding the raw inputs."""
        payload = _v2_payload(body) if len(body) >= _SIMDJSON_MIN_BYTES else load_json(body)
        if type(payload) is not dict:
            raise _bad(
                "invalid_structure", f"the body must be a JSON object with inputs, got {_type_name(payload)}"
            )
        for position, key in enumerate(payload):
            if key not in _V2_KEYS:
                raise _bad(
                    "unknown_key",
                    f"body[{position}] is an unknown key; allowed: {', '.join(sorted(_V2_KEYS))}",
                    field=f"body[{position}]",
                )
        request_id = payload.get("id")
        if request_id is not None and (
            type(request_id) is not str or len(request_id) > 256 or not _utf8(request_id)
        ):
            raise _bad(
                "invalid_structure",
                "id must be a string of at most 256 characters (no lone surrogate)",
                field="id",
            )
        params = _V2Params()
        if "parameters" in payload:
            params = self._v2_params(payload["parameters"])
        outputs, binary_outputs = self._v2_outputs(
            payload.get("outputs"), params.probabilities, params.binary_output
        )
        inputs = payload.get("inputs")
        if type(inputs) is not list or not inputs:
            raise _bad("missing_data", "inputs must be a non-empty array of tensors", field="inputs")
        tensors = []
        offset = 0
        for i, tensor in enumerate(inputs):
            parsed, size = self._v2_tensor(tensor, i, binary, offset)
            tensors.append(parsed)
            offset += size
        # JSON true/false would become 1.0/0.0 inside numpy: only lists need that scan (a lazy
        # simdjson array refuses booleans itself), and it costs as much as parsing a big body.
        lists = any(type(t.data) is list for t in tensors)
        fast = lists and b"true" not in body and b"false" not in body
        if binary is not None and offset != len(binary):
            raise _bad(
                "invalid_structure",
                f"the binary section has {len(binary)} bytes, but the inputs' binary_data_size add up "
                f"to {offset}",
                field="binary_data_size",
            )
        return self.v2_tensors(tensors, outputs, request_id, binary_outputs, fast)

    def v2_tensors(
        self,
        tensors: list[TensorIn],
        outputs: tuple[str, ...],
        request_id: str | None,
        binary_outputs: frozenset[str] = frozenset(),
        fast: bool = True,
    ) -> V2Request:
        """The matrix of a request's input tensors: one [rows, columns] tensor in signature order, or
        one [rows] or [rows, 1] tensor per signature column (any order). Shared by JSON, the binary
        data extension and gRPC, so that all three check the same things the same way."""
        width = self.schema.width
        if len(tensors) == 1 and len(tensors[0].shape) == 2:
            tensor = tensors[0]
            shape = tensor.shape
            name = "inputs[0]"  # the client's tensor name is never echoed
            if shape[1] != width:
                raise _bad(
                    "shape_mismatch",
                    f"input '{clean_name(name)}' has shape {shape}; expected [rows, {width}] "
                    "(one column per signature field, in signature order)",
                    field=name,
                )
            self.check_rows(shape[0])
            X = self._v2_values(tensor.data, shape, tensor.kind, name, fast, self.schema.columns)
            return V2Request(X, outputs, request_id, binary_outputs)
        order = self._columns_order([t.name for t in tensors], label="inputs")
        rows = None
        blocks = []
        for tensor in tensors:
            name, shape = tensor.name, tensor.shape
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise _bad(
                    "shape_mismatch",
                    f"input '{clean_name(name)}' has shape {shape}; "
                    "a per-column tensor has shape [rows] or [rows, 1]",
                    field=name,
                )
            if rows is None:
                rows = shape[0]
                self.check_rows(rows)
            elif shape[0] != rows:
                raise _bad(
                    "ragged_row",
                    f"input '{clean_name(name)}' has {shape[0]} rows; expected {rows}",
                    field=name,
                )
            column = self.schema.columns[self.schema.index[name]]
            blocks.append(
                self._v2_values(
                    tensor.data, [shape[0], 1], tensor.kind, name, fast, (Column(name, column.kind),)
                )
            )
        X = np.hstack(blocks)
        return V2Request(X if order is None else X[:, order], outputs, request_id, binary_outputs)

    def _v2_params(self, params: Any) -> _V2Params:
        flags = _flags(params, "parameters", V2_PARAM_KEYS)
        return _V2Params(flags.get("probabilities", False), flags.get("binary_data_output", False))

    def _v2_outputs(
        self, outputs: Any, probabilities: bool, binary: bool
    ) -> tuple[tuple[str, ...], frozenset[str]]:
        if outputs is None:
            default = V2_OUTPUTS if probabilities else ("predict",)
            return default, frozenset(default) if binary else frozenset()
        if type(outputs) is not list or not outputs:
            raise _bad("invalid_structure", "outputs must be a non-empty array of {name}", field="outputs")
        names: list[str] = []
        binary_names: set[str] = set()
        for item in outputs:
            name = item.get("name") if type(item) is dict else None
            if type(item) is not dict or not set(item) <= {"name", "parameters"}:
                raise _bad(
                    "invalid_structure", "each requested output is an object with a name", field="outputs"
                )
            where = f"outputs[{len(names)}]"
            if name not in V2_OUTPUTS:
                raise _bad(
                    "unknown_output",
                    f"{where} names an unknown output; allowed: {', '.join(V2_OUTPUTS)}",
                    field=where,
                )
            wants_binary = binary
            parameters = item.get("parameters")
            if parameters is not None:
                if type(parameters) is not dict:
                    raise _bad("invalid_params", f"{where}.parameters must be an object", field=where)
                for key, value in parameters.items():
                    if key != "binary_data":
                        raise _bad(
                            "unknown_param",
                            f"{where}.parameters has an unknown key; allowed: binary_data",
                            field=where,
                        )
                    if type(value) is not bool:
                        raise _bad(
                            "invalid_params",
                            f"{where}.parameters.binary_data must be true or false",
                            field=where,
                        )
                    wants_binary = value
            names.append(name)
            if wants_binary:
                binary_names.add(name)
        return tuple(dict.fromkeys(names)), frozenset(binary_names)

    def _v2_tensor(self, tensor: Any, i: int, binary: memoryview | None, offset: int) -> tuple[TensorIn, int]:
        """One JSON input tensor, its data from JSON or from the binary section at `offset`;
        returns it and how many binary bytes it took."""
        if type(tensor) is not dict:
            raise _bad("invalid_structure", f"inputs[{i}] must be an object", field="inputs")
        for position, key in enumerate(tensor):
            if key not in _V2_TENSOR_KEYS:
                raise _bad(
                    "unknown_key",
                    f"inputs[{i}] has an unknown key (key {position}); "
                    f"allowed: {', '.join(sorted(_V2_TENSOR_KEYS))}",
                    field=f"inputs[{i}]",
                )
        parameters = tensor.get("parameters")
        if parameters is not None and type(parameters) is not dict:
            raise _bad("invalid_params", f"inputs[{i}].parameters must be an object", field="parameters")
        size = None if parameters is None else parameters.get("binary_data_size")
        for key in (
            ("name", "shape", "datatype") if size is not None else ("name", "shape", "datatype", "data")
        ):
            if key not in tensor:
                raise _bad("invalid_structure", f"inputs[{i}] needs '{key}'", field=key)
        name = tensor["name"]
        if type(name) is not str:
            raise _bad("invalid_structure", f"inputs[{i}].name must be a string", field="name")
        shape = tensor_shape(tensor["shape"], i)
        datatype = tensor["datatype"]
        kind = tensor_kind(datatype, i)
        if size is None:
            return TensorIn(name, shape, kind, tensor["data"]), 0
        if "data" in tensor:
            raise _bad(
                "invalid_structure",
                f"inputs[{i}] has both data and binary_data_size; send its values one way",
                field=f"inputs[{i}]",
            )
        if binary is None:
            raise _bad(
                "invalid_header",
                f"inputs[{i}] has binary_data_size, but the request has no Inference-Header-Content-Length "
                "header (the binary data extension needs it)",
                field="binary_data_size",
            )
        if type(size) is not int or size < 0:
            raise _bad(
                "invalid_params",
                f"inputs[{i}].parameters.binary_data_size must be a non-negative integer",
                field="binary_data_size",
            )
        if offset + size > len(binary):
            raise _bad(
                "invalid_structure",
                f"inputs[{i}] has binary_data_size {size}, but only {len(binary) - offset} bytes "
                "remain in the body",
                field="binary_data_size",
            )
        data = self.raw_tensor(binary[offset : offset + size], shape, datatype, i)
        return TensorIn(name, shape, kind, data), size

    def raw_tensor(self, data: bytes | memoryview, shape: list[int], datatype: str, i: int) -> np.ndarray:
        """A tensor's raw little-endian bytes as a flat array, after checking rows and size against
        its shape (the row limit first, so an oversized request is refused before any decoding)."""
        self.check_rows(shape[0])
        dtype = RAW_DTYPES[datatype]
        count = math.prod(shape)
        if len(data) != count * dtype.itemsize:
            raise _bad(
                "shape_mismatch",
                f"inputs[{i}] has {len(data)} bytes of {datatype}; its shape {shape} needs "
                f"{count * dtype.itemsize}",
                field=f"inputs[{i}]",
            )
        return np.frombuffer(data, dtype=dtype, count=count)

    def _v2_values(
        self,
        data: Any,
        shape: list[int],
        kind: ColumnKind,
        name: str,
        fast: bool,
        columns: tuple[Column, ...],
    ) -> np.ndarray:
        rows, width = shape[0], shape[1]
        narrowed = self._narrowed_schema(columns, kind)
        if isinstance(data, np.ndarray):
            if data.size != rows * width:
                raise _bad(
                    "shape_mismatch",
                    f"input '{clean_name(name)}' has {data.size} values; its shape {shape} needs "
                    f"{rows * width}",
                    field=name,
                )
            raw = data.reshape(rows, width)
            # Floats are checked as the model takes them; integers as integers (their range),
            # then converted.
            matrix = _float64_rows(raw) if raw.dtype.kind == "f" else raw
            if not narrowed.check_block(matrix):
                _raise_first_bad(matrix, narrowed)
            return matrix if matrix.dtype.kind == "f" else np.array(matrix, dtype=np.float64, order="C")
        if type(data) is simdjson.Array:
            if not narrowed.needs_checks:
                # Numbers straight into a float64 buffer: no Python float per value.
                numbers: np.ndarray | None
                try:
                    numbers = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
                except (TypeError, ValueError, RuntimeError):
                    numbers = None
                if numbers is not None and numbers.size == rows * width:
                    grid = numbers.reshape(rows, width)
                    if narrowed.check_block(grid):
                        return grid
            # Not all finite doubles: the list path names the first bad value.
            data = data.as_list()
        if type(data) is not list:
            raise _bad("invalid_structure", f"input '{clean_name(name)}' data must be an array", field=name)
        if fast:
            block = _numeric_array(data)
            if (
                block is not None
                and block.size == rows * width
                and (block.ndim == 1 or block.shape == (rows, width))
            ):
                block = block.reshape(rows, width)
                if narrowed.check_block(block):
                    return self._finish(block)
        flat = _flatten(data, name)
        if len(flat) != rows * width:
            raise _bad(
                "shape_mismatch",
                f"input '{clean_name(name)}' has {len(flat)} values; its shape {shape} needs {rows * width}",
                field=name,
            )
        out = np.empty(rows * width, dtype=np.float64)
        for k, value in enumerate(flat):
            out[k] = check_value(value, narrowed.columns[k % width], k // width)
        return out.reshape(rows, width)


_SIMDJSON_ERRORS = (ValueError, RuntimeError, TypeError, UnicodeDecodeError)
_SIMDJSON_MIN_BYTES = 4096
"""Smaller bodies (a few rows) parse faster with orjson than through simdjson's lazy objects."""


def _utf8(text: str) -> bool:
    """Whether `text` encodes to UTF-8: a JSON escape may hold a lone surrogate, which the
    answer that echoes it could not carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_json(value: Any) -> Any:
    if type(value) is simdjson.Object:
        return value.as_dict()
    if type(value) is simdjson.Array:
        return value.as_list()
    return value


def _v2_payload(body: bytes) -> Any:
    """A V2 request as Python objects, except each input tensor's flat data, which stays a lazy
    simdjson array that `_v2_values` reads straight into numpy (4-5x faster than building a
    Python float per value and then an array from them). Anything simdjson refuses, nested
    data, and duplicate keys (where it keeps the first and orjson the last) go through
    `load_json`, whose errors are the precise ones."""
    try:
        doc = simdjson.Parser().parse(body)
    except _SIMDJSON_ERRORS:
        return load_json(body)
    if type(doc) is not simdjson.Object:
        return _plain_json(doc)
    keys = list(doc.keys())
    if len(set(keys)) != len(keys):
        return load_json(body)
    payload: dict[str, Any] = {}
    for key in keys:
        value = doc[key]
        if key != "inputs" or type(value) is not simdjson.Array:
            payload[key] = _plain_json(value)
            continue
        tensors: list[Any] = []
        for tensor in value:
            if type(tensor) is not simdjson.Object:
                tensors.append(_plain_json(tensor))
                continue
            names = list(tensor.keys())
            if len(set(names)) != len(names):
                return load_json(body)
            tensors.append(
                {
                    name: tensor[name]
                    if name == "data" and type(tensor[name]) is simdjson.Array
                    else _plain_json(tensor[name])
                    for name in names
                }
            )
        payload[key] = tensors
    # Flat tensors only: the inputs array, each tensor's shape and data, the outputs array.
    # Nested data (or an array anywhere else) goes the general way, which checks its nesting.
    if body.count(b"[") != 1 + 2 * len(payload.get("inputs") or ()) + ("outputs" in payload):
        return load_json(body)
    return payload


def tensor_shape(shape: Any, i: int) -> list[int]:
    """A V2 tensor shape this server takes: [rows] or [rows, columns], non-negative integers."""
    if type(shape) is not list or not 1 <= len(shape) <= 2 or any(type(s) is not int or s < 0 for s in shape):
        raise _bad(
            "shape_mismatch",
            f"inputs[{i}].shape must be [rows] or [rows, columns] of non-negative integers",
            field="shape",
        )
    return shape


def tensor_kind(datatype: Any, i: int) -> ColumnKind:
    if datatype not in V2_KINDS:
        raise _bad(
            "type_mismatch",
            f"inputs[{i}].datatype must be one of {', '.join(V2_KINDS)} for this model",
            field=f"inputs[{i}]",
        )
    return V2_KINDS[datatype]


def _float64_rows(raw: np.ndarray) -> np.ndarray:
    """Raw float rows as the model takes them: float64, C-ordered, aligned and the request's own.
    Rows from the binary data extension's aligned buffer already are (tensors.split_binary_body);
    gRPC's raw contents sit at any offset of a read-only message and are copied (before the
    checks, which would otherwise read unaligned values through a buffer each)."""
    flags = raw.flags
    if raw.dtype == np.float64 and flags.c_contiguous and flags.aligned and flags.writeable:
        return raw
    return np.array(raw, dtype=np.float64, order="C")


def _raise_first_bad(block: np.ndarray, schema: InputSchema) -> None:
    """Name the first value (row-major) of a raw block that its column's kind refuses."""
    bad = np.zeros(block.shape, dtype=bool)
    floating = block.dtype.kind == "f"
    for j, column in enumerate(schema.columns):
        values = block[:, j]
        if floating:
            wrong = ~(np.abs(values) <= _FLOAT32_MAX)  # NaN and infinities too
            if column.kind in ("long", "integer"):
                wrong |= True
        elif column.kind in ("long", "integer"):
            low, high = (-(2**31), 2**31 - 1) if column.kind == "integer" else (-(2**63), 2**63 - 1)
            wrong = (values < low) | (values > high)
        else:
            wrong = np.zeros(len(values), dtype=bool)
        bad[:, j] = wrong
    row, j = divmod(int(np.flatnonzero(bad)[0]), block.shape[1])
    value = block[row, j].item()
    column = schema.columns[j]
    if floating and not math.isfinite(value):
        literal = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        raise _bad(
            "non_finite",
            f"row {row}, column '{clean_name(column.name)}': got {literal}, and the signature does "
            "not allow it",
            field=column.name,
            row=row,
        )
    check_value(value, column, row)
    raise AssertionError("check_block refused a block whose values all pass check_value")


def _numeric_array(data: list[Any]) -> np.ndarray | None:
    """`data` as one numeric numpy array when numpy can take it whole; None sends it the slow way."""
    try:
        block = np.array(data)
    except (ValueError, TypeError, OverflowError):
        return None
    return block if block.dtype.kind in "iuf" else None


def _narrower(signature: ColumnKind, tensor: ColumnKind) -> ColumnKind:
    return signature if _NARROWNESS[signature] >= _NARROWNESS[tensor] else tensor


def _flatten(data: list[Any], name: str) -> list[Any]:
    """Row-major values of a flat or once-nested array (V2 allows both)."""
    if not data or type(data[0]) is not list:
        return data
    flat: list[Any] = []
    for row in data:
        if type(row) is not list:
            raise _bad("shape_mismatch", f"input '{clean_name(name)}' mixes nested and flat data", field=name)
        flat.extend(row)
    return flat


def _csv_value(cell: str) -> Any:
    if not cell:
        return None
    if _CSV_NUMBER.fullmatch(cell):
        value = float(cell)
        return int(cell) if len(cell) <= 40 and cell.lstrip("+-").isdigit() else value
    if _CSV_NON_FINITE.fullmatch(cell):
        return NonFinite(cell if len(cell) <= 9 else cell[:9])
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    return cell
