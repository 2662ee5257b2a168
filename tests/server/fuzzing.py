"""A seeded generator of hostile requests for the model server (the real-process fuzz test).

Each request is near a valid one with something wrong, or plainly hostile: malformed or
truncated JSON, out-of-range and non-finite numbers, wrong shapes, deep nesting, odd Unicode
(lone surrogates, zero-width and right-to-left characters, NUL), wrong content types,
oversized bodies (declared and streamed), unknown routes and methods. Strings a request
carries (column names, paths, ids, content types) hold MARKER, so that a test can tell whether
any of it came back in an error or in a metric label.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MARKER", "FuzzRequest", "Fuzzer"]

MARKER = "zq-fuzz-7731"
_LITERAL = "@@literal@@"
LITERALS = (
    "1e308",
    "-1e308",
    "1e309",
    "-1e999",
    str(2**63 - 1),
    str(2**64),
    str(-(2**63)),
    str(10**400),
    "3.4028235e38",
    "3.5e38",
    "NaN",
    "Infinity",
    "-Infinity",
    "5e-324",
    "-0.0",
    "1E+2",
    "0x10",
    "01",
    ".5",
    "1.",
    "+1",
    "nan",
)
"""Number-like JSON text: valid numbers at the edges of the ranges, and near-numbers that are not JSON."""
ODD_TEXT = (
    MARKER,
    f"\u202e{MARKER}",
    f"{MARKER}\u200b",
    f"e\u0301{MARKER}",
    f"{MARKER}\U0001f600",
    f"{MARKER}\x00",
    f"\ufeff{MARKER}",
    MARKER * 40,
    "",
    " ",
)
ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    "1.5",
    MARKER,
    [],
    [1.0],
    {},
    {"a": MARKER},
    0,
    -1,
    1e-300,
)
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "APPLICATION/JSON",
    "text/csv",
    "text/plain",
    "application/xml",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    f"application/{MARKER}",
    "application/json; " + "x" * 2000,
    "",
)


@dataclass(frozen=True)
class FuzzRequest:
    kind: str
    """The generator that made it (for failure messages and per-kind figures)."""
    method: str
    path: str
    body: bytes | Iterator[bytes]
    """Bytes (sent with Content-Length), or chunks (sent chunked, no length declared)."""
    headers: dict[str, str] = field(default_factory=dict)


class Fuzzer:
    """Requests for one model: `columns` its signature, `rows` valid feature rows."""

    def __init__(
        self, seed: int, model_name: str, columns: list[str], rows: np.ndarray, max_body: int, max_rows: int
    ) -> None:
        self.rng = random.Random(seed)
        self.model = model_name
        self.columns = columns
        self.rows = rows
        self.max_body = max_body
        self.max_rows = max_rows
        self._makers: list[Callable[[], FuzzRequest]] = [
            self._values,
            self._values,
            self._structure,
            self._v2_json,
            self._v2_binary,
            self._csv,
            self._malformed,
            self._deep,
            self._content_type,
            self._oversized,
            self._route,
        ]

    # -- building blocks -----------------------------------------------------------------

    def _pick(self, options: Any) -> Any:
        return options[self.rng.randrange(len(options))]

    def _table(self, count: int | None = None) -> list[list[Any]]:
        count = count or self.rng.randint(1, 3)
        picked = self.rows[[self.rng.randrange(len(self.rows)) for _ in range(count)]]
        return picked.tolist()

    def _json(self, payload: Any) -> bytes:
        """JSON text with each _LITERAL string replaced by a literal from LITERALS (raw, unquoted)."""
        text = json.dumps(payload, allow_nan=True, ensure_ascii=self.rng.random() < 0.5)
        while f'"{_LITERAL}"' in text:
            text = text.replace(f'"{_LITERAL}"', self._pick(LITERALS), 1)
        return text.encode("utf-8", "surrogatepass")

    def _odd_value(self) -> Any:
        return _LITERAL if self.rng.random() < 0.6 else self._pick(ODD_VALUES)

    def _mutate(self, table: list[list[Any]]) -> None:
        for _ in range(self.rng.randint(1, 3)):
            row = table[self.rng.randrange(len(table))]
            row[self.rng.randrange(len(row))] = self._odd_value()

    def _format(self, columns: list[Any], table: list[list[Any]]) -> dict[str, Any]:
        choice = self.rng.randrange(5)
        if choice == 0:
            return {"dataframe_split": {"columns": columns, "data": table}}
        if choice == 1:
            return {"dataframe_records": [dict(zip(columns, row, strict=False)) for row in table]}
        if choice == 2:
            return {"instances": table}
        if choice == 3:
            return {"inputs": table}
        return {"inputs": {name: [row[i] for row in table if i < len(row)] for i, name in enumerate(columns)}}

    def _post(
        self, kind: str, body: bytes, content_type: str = "application/json", path: str = ""
    ) -> FuzzRequest:
        headers = {"content-type": content_type} if content_type else {}
        return FuzzRequest(kind, "POST", path or "/invocations", body, headers)

    # -- valid requests (the peer the fuzz test compares latency with) ---------------------

    def valid(self) -> FuzzRequest:
        payload = {"dataframe_split": {"columns": self.columns, "data": self._table(1)}}
        return self._post("valid", json.dumps(payload).encode())

    # -- generators ------------------------------------------------------------------------

    def next(self) -> FuzzRequest:
        return self._pick(self._makers)()

    def _values(self) -> FuzzRequest:
        """A valid request with one to three values replaced by edge numbers or wrong types."""
        table = self._table()
        self._mutate(table)
        return self._post("values", self._json(self._format(list(self.columns), table)))

    def _structure(self) -> FuzzRequest:
        columns: list[Any] = list(self.columns)
        table = self._table()
        change = self.rng.randrange(12)
        payload: Any
        if change == 0:
            columns.pop(self.rng.randrange(len(columns)))
        elif change == 1:
            columns.append(self._pick(ODD_TEXT))
            for row in table:
                row.append(1.0)
        elif change == 2:
            columns[self.rng.randrange(len(columns))] = self._pick(ODD_TEXT)
        elif change == 3:
            columns[self.rng.randrange(len(columns))] = columns[0]
        elif change == 4:
            self.rng.shuffle(columns)
        elif change == 5:
            table[self.rng.randrange(len(table))].pop()
        elif change == 6:
            table = [MARKER, *table]  # type: ignore[list-item]
        elif change == 7:
            table = []
        elif change == 8:
            table = self._table(self.max_rows + self.rng.randint(1, 50))
        if change == 9:
            payload = {"dataframe_split": {"columns": columns, "data": table, "index": [MARKER]}}
        elif change == 10:
            payload = {"dataframe_split": {"columns": columns, "data": table}, self._pick(ODD_TEXT): 1}
            if self.rng.random() < 0.5:
                payload["params"] = {self._pick(("probabilities", MARKER)): self._pick(ODD_VALUES)}
        elif change == 11:
            payload = {"dataframe_split": self._pick(ODD_VALUES), "instances": table}
        else:
            payload = self._format(columns, table)
        query = self._pick(("", "", "?probabilities=true", f"?probabilities={MARKER}", "?probabilities=%FF"))
        return self._post("structure", self._json(payload), path="/invocations" + query)

    def _v2_json(self) -> FuzzRequest:
        width = len(self.columns)
        table = self._table()
        if self.rng.random() < 0.5:
            self._mutate(table)
        rows = len(table)
        flat = [v for row in table for v in row]
        tensor: dict[str, Any] = {
            "name": self._pick(("input-0", MARKER, self.columns[0])),
            "shape": self._pick(
                (
                    [rows, width],
                    [rows * width],
                    [rows, width, 1],
                    [-1, width],
                    [10**12, width],
                    [rows, "x"],
                    [],
                )
            ),
            "datatype": self._pick(("FP64", "FP64", "FP32", "INT64", "INT32", "BYTES", "BOOL", MARKER)),
            "data": self._pick((flat, table, [flat], flat[:-1], MARKER)),
        }
        payload: dict[str, Any] = {"inputs": [tensor]}
        choice = self.rng.randrange(6)
        if choice == 0:
            payload["inputs"] = [
                {"name": name, "shape": [rows], "datatype": "FP64", "data": [row[i] for row in table]}
                for i, name in enumerate(self.columns)
            ]
            self.rng.shuffle(payload["inputs"])
            payload["inputs"][0]["name"] = self._pick(
                (MARKER, self.columns[-1], payload["inputs"][0]["name"])
            )
        elif choice == 1:
            payload["id"] = self._pick((MARKER, "\ud800" + MARKER, MARKER * 20, 7, None))
        elif choice == 2:
            payload["outputs"] = self._pick(
                (
                    [{"name": "predict_proba"}],
                    [{"name": MARKER}],
                    [],
                    {},
                    [{"name": "predict", "parameters": 1}],
                )
            )
        elif choice == 3:
            payload["parameters"] = self._pick(
                (
                    {"probabilities": True},
                    {MARKER: True},
                    {"probabilities": MARKER},
                    [],
                    {"binary_data_output": 1},
                )
            )
        elif choice == 4:
            tensor["parameters"] = {"binary_data_size": self._pick((8, -1, MARKER))}
        name = self._pick((self.model, self.model, MARKER, f"{self.model}/versions/{MARKER}"))
        return self._post("v2_json", self._json(payload), path=f"/v2/models/{name}/infer")

    def _v2_binary(self) -> FuzzRequest:
        width = len(self.columns)
        X = np.asarray(self._table(), dtype=np.float64)
        if self.rng.random() < 0.5:
            X[self.rng.randrange(len(X)), self.rng.randrange(width)] = self._pick(
                (np.nan, np.inf, -np.inf, 1e308, 3.5e38, -(2.0**63))
            )
        datatype = self._pick(("FP64", "FP64", "FP32", "INT64", "INT32"))
        with np.errstate(all="ignore"):  # NaN and 1e308 cast to integers or float32: bytes all the same
            raw = X.astype({"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[datatype]).tobytes()
        if datatype in ("INT64", "INT32") and self.rng.random() < 0.5:
            raw = np.array([2**63 - 1, -(2**63)] * (len(raw) // 16), dtype="<i8").tobytes()[: len(raw)]
        size = self._pick((len(raw), len(raw), len(raw) - 1, len(raw) + 8, 0, -4))
        shape = self._pick(([len(X), width], [len(X), width], [len(X) + 1, width], [len(X) * width]))
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": shape,
                        "datatype": datatype,
                        "parameters": {"binary_data_size": size},
                    }
                ],
                "parameters": {"binary_data_output": self.rng.random() < 0.5},
            }
        ).encode()
        declared = self._pick(
            (str(len(header)),) * 3
            + (str(len(header) + 3), "-1", "0", str(10**30), MARKER, str(len(header) + len(raw) + 1))
        )
        return FuzzRequest(
            "v2_binary",
            "POST",
            f"/v2/models/{self.model}/infer",
            header + raw,
            {
                "content-type": self._pick(("application/octet-stream", "application/json", "text/csv", "")),
                "inference-header-content-length": declared,
            },
        )

    def _csv(self) -> FuzzRequest:
        columns = list(self.columns)
        if self.rng.random() < 0.3:
            columns[self.rng.randrange(len(columns))] = self._pick(ODD_TEXT)
        table = self._table()
        cells = [[repr(v) for v in row] for row in table]
        for _ in range(self.rng.randint(0, 3)):
            row = cells[self.rng.randrange(len(cells))]
            row[self.rng.randrange(len(row))] = self._pick(
                (*LITERALS, "", '"1.0"', '"', MARKER, "true", " 1 ", "1,2", "\x00")
            )
        if self.rng.random() < 0.2:
            cells[-1].pop()
        text = ",".join(f'"{c}"' if "," in c else c for c in columns) + "\n"
        text += "\n".join(",".join(row) for row in cells)
        body = text.encode("utf-8", "surrogatepass")
        if self.rng.random() < 0.2:
            body = self._pick((b"\xef\xbb\xbf", b"\xff\xfe", b"")) + body.replace(b"\n", b"\r\n")
        return self._post(
            "csv", body, self._pick(("text/csv", "text/csv", "text/csv; charset=utf-8", "text/CSV"))
        )

    def _malformed(self) -> FuzzRequest:
        good = self._json({"dataframe_split": {"columns": self.columns, "data": self._table()}})
        choice = self.rng.randrange(9)
        if choice == 0:
            body = good[: self.rng.randrange(len(good))]
        elif choice == 1:
            flipped = bytearray(good)
            for _ in range(self.rng.randint(1, 4)):
                flipped[self.rng.randrange(len(flipped))] = self.rng.randrange(256)
            body = bytes(flipped)
        elif choice == 2:
            body = self.rng.randbytes(self.rng.randint(0, 2048))
        elif choice == 3:
            body = good.replace(b'"', b"'")
        elif choice == 4:
            body = good + self._pick((b"}", b" garbage", b"\x00", b"{}", b"\n\n"))
        elif choice == 5:
            body = b"\xef\xbb\xbf" + good
        elif choice == 6:
            body = good.replace(
                self.columns[0].encode(),
                self._pick((b"\\ud800", b"\\udfff\\ud800", b"\xc3\x28", b"\xed\xa0\x80")),
                1,
            )
        elif choice == 7:
            body = b""
        else:
            body = self._pick(
                (b"null", b"[]", b"0", b'"x"', b"{}", b"true", b"1e309", b"[" + b"1," * 1000 + b"1]")
            )
        return self._post("malformed", body, self._pick(("application/json", "text/csv")))

    def _deep(self) -> FuzzRequest:
        depth = self._pick((50, 600, 1100, 5000, 50_000, 150_000))
        opener, closer = self._pick(((b"[", b"]"), (b'{"a":', b"}")))
        inner = opener * depth + b"1" + closer * (depth if self.rng.random() < 0.7 else depth // 2)
        wrapper = self._pick(
            (b"%s", b'{"instances": %s}', b'{"dataframe_split": {"columns": [], "data": %s}}')
        )
        body = wrapper.replace(b"%s", inner)
        path = self._pick(("/invocations", f"/v2/models/{self.model}/infer"))
        if path != "/invocations":
            head = b'{"inputs": [{"name": "input-0", "shape": [1, %d], "datatype": "FP64", "data": ' % len(
                self.columns
            )
            body = head + inner + b"}]}"
        return self._post("deep", body[: self.max_body], path=path)

    def _content_type(self) -> FuzzRequest:
        good = self._json(self._format(list(self.columns), self._table()))
        path = self._pick(("/invocations", f"/v2/models/{self.model}/infer"))
        return self._post("content_type", good, self._pick(CONTENT_TYPES), path=path)

    def _oversized(self) -> FuzzRequest:
        size = self.max_body + self._pick((1, 100, self.max_body))
        body = b'{"instances": [' + b"1.0," * (size // 4) + b"1.0]}"
        if self.rng.random() < 0.5:
            return self._post("oversized", body)
        chunk = 16 * 1024
        streamed = (body[i : i + chunk] for i in range(0, len(body), chunk))
        return FuzzRequest(
            "oversized", "POST", "/invocations", streamed, {"content-type": "application/json"}
        )

    def _route(self) -> FuzzRequest:
        method = self._pick(("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "POST"))
        path = self._pick(
            (
                "/invocations",
                f"/v2/models/{self.model}/infer",
                f"/v2/models/{MARKER}/infer",
                f"/v2/models/{self.model}/versions/{MARKER}/infer",
                f"/v2/models/{self.model}/versions/{MARKER}",
                f"/v2/models/{MARKER}/ready",
                f"/v2/models/{self.model}/{MARKER}",
                f"/{MARKER}",
                f"/invocations/{MARKER}",
                f"/v2/{MARKER}\u202e",
                "/" + MARKER * 100,
                "/metrics",
                "/v2/health/ready",
            )
        )
        body = self._json({"instances": self._table()}) if method in ("POST", "PUT", "PATCH") else b""
        return FuzzRequest("route", method, path, body, {"content-type": "application/json"})
