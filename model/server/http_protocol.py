"""uvicorn's httptools protocol, with request bodies read the way the app decodes them.

uvicorn (0.54) appends each piece of a body to one bytearray, stops reading the socket whenever
more than 64 KiB wait there, and copies the bytearray into a new bytes object for each
`receive`: a 1.6 MB batch of binary tensors arrives in about 25 rounds of pause, wake the
request's task, copy, resume, and the app then copies the pieces into one aligned buffer. Here:

- a body of binary tensors (sent with Inference-Header-Content-Length and a Content-Length
  within the server's limit) that did not come whole with its headers is read by the kernel
  straight into the buffer the app decodes (`binary_body_buffer`), and handed to the app
  whole, as a memoryview of it;
- any other body is handed over in the pieces it arrived in, and reading stops only while more
  than QUEUED_BYTES wait, so a body the app reads as it comes arrives without pauses;
- a response's status line and headers go out with its first body message, in one write:
  uvicorn writes them apart, and on loopback each write is a segment that wakes the client.

Parsing, pipelining, keep-alive, `Expect: 100-continue` and responses stay uvicorn's. The
protocol is a shell around uvicorn's (uvloop reads into a caller's buffer only for a protocol
that is not an `asyncio.Protocol`, which uvicorn's is), and leans on its internals: uvicorn is
pinned (images/requirements/serving.txt), and tests/server/test_http_protocol.py is what to run
when the pin moves.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, ClassVar, cast

import httptools
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from model.server.tensors import HEADER_LENGTH, binary_body_buffer

__all__ = ["QUEUED_BYTES", "BodyProtocol"]

QUEUED_BYTES = 4 << 20
"""Most body bytes a connection holds for its request before it stops reading the socket."""

_SCRATCH = memoryview(bytearray(256 << 10))
"""Where every connection of the process reads what is not a body read in place: the parser
copies what it keeps before the next read (one event loop, one read at a time)."""


class _Held:
    """Stands in for a cycle's transport while uvicorn's `send` runs: keeps what it writes."""

    __slots__ = ("closed", "parts")

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.closed = False

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:
        self.closed = True


class _Cycle(RequestResponseCycle):
    """A request whose body is either read into `whole` or queued in `pieces`."""

    pieces: deque[bytes]
    queued: int
    whole: memoryview | None
    filled: int
    """Bytes of `whole` received."""
    head: list[bytes]
    """What uvicorn wrote for the response's start message, not yet sent."""

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # here, so that uvicorn's send runs without awaiting
        transport, held = self.transport, _Held(self.head)
        self.transport = cast(asyncio.Transport, held)
        try:
            await super().send(message)
        finally:
            self.transport = transport
        if message["type"] == "http.response.start" and not held.closed:
            return  # its head goes out with the first body message
        self.head = []
        if held.parts:
            transport.writelines(held.parts)
        if held.closed:
            transport.close()

    async def receive(self) -> ASGIReceiveEvent:
        whole = self.whole
        if whole is not None:
            while self.filled < len(whole):
                message = await super().receive()  # sends 100 Continue if asked; wakes at the end
                if message["type"] != "http.request":
                    return message
            self.whole = None
            return {"type": "http.request", "body": cast(bytes, whole), "more_body": False}
        if not self.pieces:
            message = await super().receive()  # waits for a piece, the body's end or a disconnect
            if message["type"] != "http.request" or not self.pieces:
                return message
        piece = self.pieces.popleft()
        self.queued -= len(piece)
        if not self.pieces:
            self.message_event.clear()  # what it announced is all received
        if self.queued <= QUEUED_BYTES:
            self.flow.resume_reading()
        return {"type": "http.request", "body": piece, "more_body": bool(self.pieces) or self.more_body}


class _Http(HttpToolsProtocol):
    max_body_bytes = 0
    undecided: _Cycle | None = None
    """A request whose headers the last read completed: its body may yet be read in place."""

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is previous:  # an upgrade: no new request
            return
        # uvicorn builds the cycle here and only schedules its task: nothing has used it yet.
        self.cycle.__class__ = _Cycle
        cycle = self.undecided = cast(_Cycle, self.cycle)
        cycle.pieces = deque()
        cycle.queued = 0
        cycle.whole = None
        cycle.filled = 0
        cycle.head = []

    def on_body(self, body: bytes) -> None:
        cycle = cast(_Cycle, self.cycle)
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.pieces.append(body)
        cycle.queued += len(body)
        if cycle.queued > QUEUED_BYTES:
            self.flow.pause_reading()
        cycle.message_event.set()

    def body_read_in_place(self) -> memoryview | None:
        """Where the rest of the current request's body is read, if in place. Decided after the
        read that completed its headers (its app has not run yet): a binary tensors body still
        incomplete then moves what came of it into its buffer. A body that came whole with its
        headers (a single row's, say) is left in its piece."""
        cycle, self.undecided = self.undecided, None
        if cycle is None or cycle is not self.cycle or not cycle.more_body:
            return None
        whole = _binary_body(self.headers, self.max_body_bytes, cycle.pieces)
        if whole is None:
            return None
        cycle.pieces.clear()
        cycle.filled, cycle.queued = cycle.queued, 0
        cycle.whole = whole
        return whole[cycle.filled :]

    def body_arrived(self, nbytes: int) -> bool:
        """Count `nbytes` read in place; at the body's end, wake the app and start a new parser
        (this one never saw the bytes read in place). Whether the body is complete."""
        self._unset_keepalive_if_required()
        cycle = cast(_Cycle, self.cycle)
        cycle.filled += nbytes
        assert cycle.whole is not None
        if cycle.filled < len(cycle.whole):
            return False
        cycle.more_body = False
        cycle.message_event.set()
        self.parser = _parser(self)
        return True


class BodyProtocol(asyncio.BufferedProtocol):
    """The `http` protocol class for uvicorn.Config (see `with_limit`)."""

    max_body_bytes: ClassVar[int] = 0
    """Largest body read in place (the server's limit; a larger one gets the app's 413)."""

    def __init__(self, **kwargs: Any) -> None:
        self._http = _Http(**kwargs)
        self._http.max_body_bytes = self.max_body_bytes
        self._into: memoryview | None = None

    @classmethod
    def with_limit(cls, max_body_bytes: int) -> type[BodyProtocol]:
        return cast(type[BodyProtocol], type(cls.__name__, (cls,), {"max_body_bytes": max_body_bytes}))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._http.connection_made(cast(asyncio.Transport, transport))

    def connection_lost(self, exc: Exception | None) -> None:
        self._into = None
        self._http.connection_lost(exc)

    def eof_received(self) -> None:
        self._http.eof_received()

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SCRATCH if self._into is None else self._into

    def buffer_updated(self, nbytes: int) -> None:
        into = self._into
        if into is None:
            self._http.data_received(cast(bytes, _SCRATCH[:nbytes]))
            if self._http.undecided is not None:
                self._into = self._http.body_read_in_place()
        elif self._http.body_arrived(nbytes):
            self._into = None
        else:
            self._into = into[nbytes:]


def _binary_body(headers: list[tuple[bytes, bytes]], limit: int, arrived: deque[bytes]) -> memoryview | None:
    """The buffer to read a binary tensors body into, what `arrived` of it copied in, if the
    request declares one within `limit`."""
    size = header_length = None
    for name, value in headers:
        if name == b"content-length":
            size = value
        elif name == HEADER_LENGTH:
            header_length = value
        elif name == b"transfer-encoding":
            return None
    if size is None or header_length is None or not (size.isdigit() and header_length.isdigit()):
        return None
    if not 0 < int(header_length) <= int(size) <= limit:
        return None  # the app answers what is wrong
    return binary_body_buffer(int(size), int(header_length), arrived)


def _parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's
    return parser
