"""The transports alone for benchmarks/serve_vs_transport.py: uvicorn and grpcio, a fixed reply.

    python -m benchmarks.bare_transports http|grpc --port P --reply FILE [--header NAME=VALUE]...
        [--processes N]

Each reads the whole request, as the model server must, and answers bytes recorded from the
model server for the same request, with nothing in between: no decoding, model, metrics or
drift. Their CPU per request is what the transport alone costs, so they bound what any change
to the server's own code can gain. Both are set up as the server sets them up: uvicorn with its
defaults (uvloop, httptools) on an SO_REUSEPORT socket, grpcio's asyncio server under uvloop,
and glibc told to keep freed bodies (`keep_freed_memory`; without it bare uvicorn paid a page
fault per 4 KB of each megabyte body, half of its CPU on 10,000-row bodies).
Not a product: it answers any request the same.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import uvicorn
import uvloop

from model.server.malloc import keep_freed_memory
from model.server.workers import listening_socket

_SERVICE = "inference.GRPCInferenceService"


def http_app(reply: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    """An ASGI app that drains the request body and answers `reply` with `headers`."""
    head = [*headers, (b"content-length", str(len(reply)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": reply})

    return app


def serve_http(port: int, reply: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    config = uvicorn.Config(
        http_app(reply, headers), lifespan="off", access_log=False, log_config=None, server_header=False
    )
    uvicorn.Server(config).run([listening_socket("127.0.0.1", port)])


async def serve_grpc(port: int, reply: bytes) -> None:
    """ModelInfer answering `reply` as it is: no (de)serializers, so the request stays bytes."""

    async def infer(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return reply

    handler = grpc.method_handlers_generic_handler(
        _SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1),
        ]
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("protocol", choices=("http", "grpc"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[], help="NAME=VALUE of the HTTP reply")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    # The other processes are this one's children, in its session: stopping its group stops all.
    one = [sys.executable, "-m", "benchmarks.bare_transports", *sys.argv[1:], "--processes", "1"]
    others = [subprocess.Popen(one) for _ in range(args.processes - 1)]
    reply = args.reply.read_bytes()
    keep_freed_memory()
    try:
        if args.protocol == "grpc":
            uvloop.run(serve_grpc(args.port, reply))
        else:
            pairs = [item.split("=", 1) for item in args.header]
            serve_http(args.port, reply, [(k.lower().encode(), v.encode()) for k, v in pairs])
    finally:
        for proc in others:
            proc.terminate()


if __name__ == "__main__":
    main()
