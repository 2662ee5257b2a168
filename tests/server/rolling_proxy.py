"""A local stand-in for a Kubernetes Service during a rolling update, for real server processes.

Routing is at the TCP level, as kube-proxy's is: each new client connection goes to one endpoint
that is in rotation and passed its last readiness probe (round robin), and stays with it until
either side closes, as conntrack keeps it. Taking an endpoint out of rotation therefore affects
new connections only; the ones already open end when the server closes them (after SIGTERM the
model server answers with `Connection: close`). With no endpoint in rotation a connection is
closed at once, as a Service without ready endpoints rejects it.

Readiness is probed like the kubelet does: `GET /v2/health/ready` on a fresh connection every
period, 200 within the timeout is a success, `failure_threshold` failures in a row take the
endpoint out. The proxy runs its own event loop in a thread, so synchronous tests drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

__all__ = ["Endpoint", "RollingProxy"]

T = TypeVar("T")

_CHUNK = 64 * 1024


@dataclass
class Endpoint:
    """One backend (a pod's IP and port) and what the proxy knows about it."""

    name: str
    host: str
    port: int
    ready: bool = False
    """The last probes passed (a failure streak below the threshold keeps it ready)."""
    terminating: bool = False
    """Out of rotation for good, as an endpoint of a pod being deleted."""
    ready_since: float | None = None
    """When the first probe passed (monotonic seconds)."""
    first_routed: float | None = None
    """When the first client connection was routed here (monotonic seconds)."""
    routed: int = 0
    """Client connections routed here."""
    probe_failures: int = 0
    """Consecutive failed readiness probes."""

    @property
    def in_rotation(self) -> bool:
        return self.ready and not self.terminating


class RollingProxy:
    """Listens on a free loopback port; `add` and `remove` endpoints while clients connect."""

    def __init__(
        self, probe_period: float = 0.1, probe_timeout: float = 2.0, failure_threshold: int = 2
    ) -> None:
        """The probe's timeout and threshold are components/serving.py's; its period is 5 s
        there, scaled down here as the tests' drain times are."""
        self.probe_period = probe_period
        self.probe_timeout = probe_timeout
        self.failure_threshold = failure_threshold
        self.rejected = 0
        """Client connections closed because no endpoint was in rotation or the chosen one refused."""
        self._endpoints: dict[str, Endpoint] = {}
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rolling-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- synchronous API (test thread) -------------------------------------------------

    def __enter__(self) -> RollingProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, name: str, url: str) -> None:
        """A new pod's endpoint: probed from now on, routed to once a probe passes."""
        parsed = httpx.URL(url)
        assert parsed.port is not None, url
        self._call(self._add(Endpoint(name, parsed.host, parsed.port)))

    def remove(self, name: str) -> None:
        """The pod is being deleted: no new connection goes to it (open ones stay)."""
        self._loop.call_soon_threadsafe(self._terminate, name)

    def endpoint(self, name: str) -> Endpoint:
        """A snapshot of what the proxy knows about `name`."""
        return self._call(self._snapshot(name))

    def rotation(self) -> list[str]:
        """Names of the endpoints new connections may go to."""
        return self._call(self._rotation())

    def wait_ready(self, name: str, timeout: float) -> bool:
        """True once `name` is in rotation; False if it is not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.endpoint(name).in_rotation:
                return True
            time.sleep(self.probe_period / 2)
        return False

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    # -- event loop side ---------------------------------------------------------------

    async def _add(self, endpoint: Endpoint) -> None:
        if endpoint.name in self._endpoints:
            raise ValueError(f"endpoint {endpoint.name!r} exists already")
        self._endpoints[endpoint.name] = endpoint
        self._probes[endpoint.name] = asyncio.create_task(self._probe(endpoint))

    def _terminate(self, name: str) -> None:
        self._endpoints[name].terminating = True
        probe = self._probes.pop(name, None)
        if probe is not None:
            probe.cancel()

    async def _snapshot(self, name: str) -> Endpoint:
        return Endpoint(**vars(self._endpoints[name]))

    async def _rotation(self) -> list[str]:
        return [e.name for e in self._endpoints.values() if e.in_rotation]

    async def _probe(self, endpoint: Endpoint) -> None:
        # The kubelet opens a connection per probe (no keep-alive): an idle probe connection
        # would otherwise keep a draining server waiting.
        limits = httpx.Limits(max_keepalive_connections=0)
        url = f"http://{endpoint.host}:{endpoint.port}/v2/health/ready"
        async with httpx.AsyncClient(timeout=self.probe_timeout, limits=limits) as client:
            while True:
                try:
                    passed = (await client.get(url)).status_code == 200
                except httpx.HTTPError:
                    passed = False
                if passed:
                    endpoint.probe_failures = 0
                    if not endpoint.ready:
                        endpoint.ready = True
                        endpoint.ready_since = endpoint.ready_since or time.monotonic()
                else:
                    endpoint.probe_failures += 1
                    if endpoint.probe_failures >= self.failure_threshold:
                        endpoint.ready = False
                await asyncio.sleep(self.probe_period)

    def _choose(self) -> Endpoint | None:
        candidates = [e for e in self._endpoints.values() if e.in_rotation]
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        endpoint = self._choose()
        backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if endpoint is not None:
            with contextlib.suppress(OSError):
                backend = await asyncio.open_connection(endpoint.host, endpoint.port)
        if endpoint is None or backend is None:
            self.rejected += 1
            client_writer.close()
            return
        endpoint.routed += 1
        endpoint.first_routed = endpoint.first_routed or time.monotonic()
        backend_reader, backend_writer = backend
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            await asyncio.gather(_pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer))
        finally:
            self._pipes.discard(task)
            for writer in (backend_writer, client_writer):
                writer.close()

    async def _shutdown(self) -> None:
        for probe in self._probes.values():
            probe.cancel()
        for pipe in list(self._pipes):
            pipe.cancel()
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*self._probes.values(), *self._pipes, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on (a half close, as TCP would)."""
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()
