"""The HTTP protocol of a real server process (model.server.http_protocol) over raw sockets: bodies
read in place or in pieces, keep-alive, pipelining, 100-continue, limits and clients that leave."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import uvicorn
from uvicorn.server import ServerState

from model.server.http_protocol import BodyProtocol
from model.server.tensors import binary_body_buffer, split_binary_body
from tests.server.conftest import Release, ServerProcess, expected, running_server

LIMIT = 8 << 20
ROWS = 20_000
"""Rows of the large batch: its body is several reads of the process's 256 KiB scratch buffer."""


@pytest.fixture(scope="module")
def lr(releases: dict[str, Release]) -> Release:
    return releases["lr"]


@pytest.fixture(scope="module")
def server(lr: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    scratch = tmp_path_factory.mktemp("http-protocol")
    args = ("--grpc-port", "0", "--max-body-bytes", str(LIMIT), "--max-batch-rows", str(ROWS))
    with running_server(str(lr.folder), scratch, *args) as proc:
        yield proc


class Connection:
    """One keep-alive connection: requests as raw bytes, responses read in order."""

    def __init__(self, server: ServerProcess) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.reader = self.sock.makefile("rb")

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, data: bytes, piece: int | None = None) -> None:
        """All of `data`, or `piece` bytes at a time with a pause between, so the server reads it
        in many reads."""
        step = piece or len(data)
        for start in range(0, len(data), step):
            self.sock.sendall(data[start : start + step])
            if piece:
                time.sleep(0.002)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status = int(self.reader.readline().split()[1])
        headers = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, self.reader.read(int(headers.get("content-length", 0)))


def _request(path: str, body: bytes, headers: dict[str, str], length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: test"]
    if "transfer-encoding" not in headers:
        lines.append(f"content-length: {len(body) if length is None else length}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _binary(X: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = X.astype("<f8").tobytes()
    size = {"binary_data_size": len(raw)}
    tensor = {"name": "x", "shape": list(X.shape), "datatype": "FP64", "parameters": size}
    head = orjson.dumps({"inputs": [tensor]})
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}
    return head + raw, headers


def _json(X: np.ndarray) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "x", "shape": list(X.shape), "datatype": "FP64", "data": X.tolist()}
    return orjson.dumps({"inputs": [tensor]}), {"content-type": "application/json"}


def _rows(lr: Release, n: int) -> np.ndarray:
    return lr.frame.sample(n, replace=True, random_state=n).to_numpy(dtype=np.float64)


def _answer(lr: Release, X: np.ndarray) -> list[Any]:
    return expected(lr, pd.DataFrame(X, columns=lr.columns))


def _predictions(status: int, body: bytes) -> list[Any]:
    assert status == 200, body[:500]
    data: list[Any] = orjson.loads(body)["outputs"][0]["data"]
    return data


def _infer(lr: Release) -> str:
    return f"/v2/models/{lr.model_name}/infer"


def test_a_large_binary_batch_in_many_reads_answers_like_json_on_one_connection(
    server: ServerProcess, lr: Release
) -> None:
    X = _rows(lr, ROWS)
    want = _answer(lr, X)
    with Connection(server) as conn:
        conn.send(_request(_infer(lr), *_binary(X)), piece=48 << 10)
        assert _predictions(*conn.response()[::2]) == want
        conn.send(_request(_infer(lr), *_json(X)))
        assert _predictions(*conn.response()[::2]) == want
        conn.send(_request(_infer(lr), *_binary(X)))  # whole, in as few reads as the kernel makes
        assert _predictions(*conn.response()[::2]) == want


def test_pipelined_requests_are_answered_in_order(server: ServerProcess, lr: Release) -> None:
    batches = [_rows(lr, 3000), _rows(lr, 5), _rows(lr, 4000)]
    requests = [_binary(batches[0]), _json(batches[1]), _binary(batches[2])]
    with Connection(server) as conn:
        conn.send(b"".join(_request(_infer(lr), *request) for request in requests))
        for X in batches:
            assert _predictions(*conn.response()[::2]) == _answer(lr, X)


def test_expect_100_continue_gets_the_body_read_in_place(server: ServerProcess, lr: Release) -> None:
    X = _rows(lr, ROWS)
    body, headers = _binary(X)
    with Connection(server) as conn:
        conn.send(_request(_infer(lr), b"", {**headers, "expect": "100-continue"}, length=len(body)))
        assert conn.reader.readline().startswith(b"HTTP/1.1 100")
        assert conn.reader.readline() == b"\r\n"
        conn.send(body, piece=256 << 10)
        assert _predictions(*conn.response()[::2]) == _answer(lr, X)


def test_a_chunked_binary_body_is_answered(server: ServerProcess, lr: Release) -> None:
    X = _rows(lr, ROWS)
    body, headers = _binary(X)
    step = 100_000
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    with Connection(server) as conn:
        conn.send(_request(_infer(lr), chunked + b"0\r\n\r\n", {**headers, "transfer-encoding": "chunked"}))
        assert _predictions(*conn.response()[::2]) == _answer(lr, X)


def test_a_body_declared_over_the_limit_gets_413_before_it_is_sent(
    server: ServerProcess, lr: Release
) -> None:
    _, headers = _binary(_rows(lr, 1))
    with Connection(server) as conn:
        conn.send(_request(_infer(lr), b"", headers, length=LIMIT + 1))
        status, _, answer = conn.response()
    assert status == 413
    assert orjson.loads(answer)["error_code"] == "body_too_large"


def test_a_header_length_beyond_the_body_gets_400(server: ServerProcess, lr: Release) -> None:
    body, headers = _binary(_rows(lr, 10))
    with Connection(server) as conn:
        too_long = {**headers, "inference-header-content-length": str(len(body) + 1)}
        conn.send(_request(_infer(lr), body, too_long))
        status, _, answer = conn.response()
        assert status == 400
        assert orjson.loads(answer)["error_code"] == "invalid_header"
        X = _rows(lr, 10)  # the connection still serves
        conn.send(_request(_infer(lr), *_binary(X)))
        assert _predictions(*conn.response()[::2]) == _answer(lr, X)


def test_a_client_leaving_mid_body_does_not_disturb_the_others(server: ServerProcess, lr: Release) -> None:
    X = _rows(lr, ROWS)
    request = _request(_infer(lr), *_binary(X))
    for cut in (len(request) // 3, len(request) - 1):
        with Connection(server) as gone:
            gone.send(request[:cut])
            time.sleep(0.05)
    with Connection(server) as conn:
        conn.send(request)
        assert _predictions(*conn.response()[::2]) == _answer(lr, X)
    assert "Traceback" not in server.log_text()


def test_a_body_read_in_place_is_split_where_it_is() -> None:
    head = b'{"inputs": []}'
    body = binary_body_buffer(len(head) + 24, len(head))
    body[:] = head + np.arange(3, dtype="<f8").tobytes()
    header, binary = split_binary_body([body], str(len(head)).encode())
    assert header == head
    section = np.frombuffer(binary, dtype="<f8")
    assert section.tolist() == [0.0, 1.0, 2.0]
    assert np.shares_memory(section, np.frombuffer(body, dtype=np.uint8))
    assert section.ctypes.data % 64 == 0


class _Transport(asyncio.Transport):
    """What uvicorn's protocol asks of a transport, writes kept."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        """One item per write (writelines joins its pieces into one: asyncio's own default)."""
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _connected(app: Any) -> tuple[BodyProtocol, _Transport]:
    config = uvicorn.Config(app, lifespan="off", log_config=None)
    protocol = BodyProtocol.with_limit(1 << 20)(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def _feed(data: bytes, read: int) -> tuple[list[Any], int]:
    """`data` read by a BodyProtocol at most `read` bytes at a time into the buffers it gives;
    the messages its app received, and how many reads went into a buffer of the body's own.
    Reading is never paused meanwhile."""
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while not received or received[-1]["more_body"]:
            received.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    protocol, transport = _connected(app)
    scratch = protocol.get_buffer(-1).obj  # where a connection reads headers
    in_place = fed = 0
    while fed < len(data):
        buffer = protocol.get_buffer(-1)
        in_place += buffer.obj is not scratch
        n = min(len(buffer), len(data) - fed, read)
        buffer[:n] = data[fed : fed + n]
        protocol.buffer_updated(n)
        fed += n
        await asyncio.sleep(0)
        assert transport.reading
    while not received or received[-1]["more_body"]:
        await asyncio.sleep(0.001)
    return received, in_place


def test_a_binary_body_reaches_the_app_as_the_buffer_it_was_read_into() -> None:
    values = np.arange(30_000, dtype="<f8")
    head = orjson.dumps({"inputs": [{"name": "x", "shape": [30_000], "datatype": "FP64"}]})
    body = head + values.tobytes()
    request = _request("/v2/models/m/infer", body, {"inference-header-content-length": str(len(head))})
    received, in_place = asyncio.run(_feed(request, 64 << 10))
    assert len(received) == 1 and received[0]["more_body"] is False
    whole = received[0]["body"]
    assert isinstance(whole, memoryview) and bytes(whole) == body
    assert in_place == len(request) // (64 << 10)  # every read after the one with the headers
    _, binary = split_binary_body([whole], str(len(head)).encode())
    assert np.shares_memory(np.frombuffer(binary, dtype="<f8"), np.frombuffer(whole, dtype=np.uint8))


def test_other_bodies_reach_the_app_in_the_pieces_they_arrived_in() -> None:
    body = orjson.dumps(list(range(60_000)))
    request = _request("/invocations", body, {"content-type": "application/json"})
    received, in_place = asyncio.run(_feed(request, 64 << 10))
    assert in_place == 0
    assert len(received) == -(-len(request) // (64 << 10))
    assert all(type(message["body"]) is bytes for message in received)
    assert b"".join(message["body"] for message in received) == body


def test_a_response_goes_out_with_its_head_in_one_write() -> None:
    """uvicorn writes the status line and headers apart from the body: on loopback a segment of
    its own that wakes the client for nothing. A streamed body's later pieces follow as sent."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        whole = scope["path"] == "/whole"
        headers = [(b"content-length", b"5")] if whole else []  # else chunked
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        pieces = [b"whole"] if whole else [b"first", b"second"]
        for i, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(pieces) - 1})

    async def run() -> list[bytes]:
        protocol, transport = _connected(app)
        request = _request("/whole", b"", {}) + _request("/streamed", b"", {})
        buffer = protocol.get_buffer(-1)
        buffer[: len(request)] = request
        protocol.buffer_updated(len(request))
        while len(transport.writes) < 3:
            await asyncio.sleep(0.001)
        return transport.writes

    whole, streamed_head, streamed_rest = asyncio.run(run())
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and whole.endswith(b"\r\n\r\nwhole")
    assert streamed_head.startswith(b"HTTP/1.1 200 OK\r\n") and streamed_head.endswith(b"\r\n5\r\nfirst\r\n")
    assert streamed_rest == b"6\r\nsecond\r\n0\r\n\r\n"


def test_a_request_answered_before_its_body_arrived_leaves_the_connection_serving(
    server: ServerProcess, lr: Release
) -> None:
    X = _rows(lr, ROWS)
    request = _request("/v2/models/no-such-model/infer", *_binary(X))
    with Connection(server) as conn:
        conn.send(request[: len(request) // 4])
        status, _, answer = conn.response()
        assert status == 404, answer
        conn.send(request[len(request) // 4 :], piece=256 << 10)
        conn.send(_request(_infer(lr), *_binary(X)))
        assert _predictions(*conn.response()[::2]) == _answer(lr, X)
