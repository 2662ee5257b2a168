"""Bounded load on loopback: zero errors, the expected release on every response, clean drains."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.server.conftest import Release, ServerProcess, expected, split_body, wait_live, wait_ready


@dataclass
class Tally:
    ok: int = 0
    wrong_release: int = 0
    wrong_answer: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _hammer(
    url: str, body: dict[str, Any], answer: list[Any], release_id: str, until: float, tally: Tally
) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        while time.monotonic() < until:
            try:
                response = http.post("/invocations", json=body)
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.errors.append(type(exc).__name__)
                continue
            with tally.lock:
                if response.status_code != 200:
                    tally.errors.append(f"HTTP {response.status_code}")
                elif response.headers.get("x-mlops-release-id") != release_id:
                    tally.wrong_release += 1
                elif response.json()["predictions"] != answer:
                    tally.wrong_answer += 1
                else:
                    tally.ok += 1


@pytest.mark.slow
def test_sustained_load(rf_process: ServerProcess, releases: dict[str, Release]) -> None:
    release = releases["rf"]
    tally = Tally()
    until = time.monotonic() + 4.0
    threads = []
    for i in range(8):
        frame = release.frame.sample(1 if i < 6 else 200, random_state=i)
        args = (rf_process.url, split_body(frame), expected(release, frame), release.release_id, until, tally)
        threads.append(threading.Thread(target=_hammer, args=args))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert tally.errors == [] and tally.wrong_release == 0 and tally.wrong_answer == 0
    assert tally.ok > 200
    assert rf_process.proc.poll() is None


@dataclass
class Outcome:
    started: float
    kind: str


def _until_refused(
    url: str, body: dict[str, Any], stop: float, outcomes: list[Outcome], lock: threading.Lock
) -> None:
    with httpx.Client(base_url=url, timeout=15) as http:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                response = http.post("/invocations", json=body)
                kind = "ok" if response.status_code == 200 else f"HTTP {response.status_code}"
            except httpx.ConnectError:
                kind = "refused"
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
            with lock:
                outcomes.append(Outcome(started, kind))
            if kind == "refused":
                return


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(releases: dict[str, Release], process_factory: Any) -> None:
    release = releases["rf"]
    server: ServerProcess = process_factory(str(release.folder), "--drain-seconds", "4")
    wait_live(server)
    with httpx.Client(base_url=server.url, timeout=5) as http:
        wait_ready(http)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = time.monotonic() + 15
    threads = [
        threading.Thread(
            target=_until_refused,
            args=(
                server.url,
                split_body(release.frame.sample(2000 if i == 0 else 1, replace=True, random_state=i)),
                stop,
                outcomes,
                lock,
            ),
        )
        for i in range(6)
    ]
    for thread in threads:
        thread.start()
    # The probe's connection is open before the signal, as a load balancer's or kubelet's
    # keep-alive connection would be: the server keeps listening while any connection is open,
    # and stops at the first moment none is (a new connection after that is refused).
    prober = httpx.Client(base_url=server.url, timeout=2)
    assert prober.get("/v2/health/ready").status_code == 200
    time.sleep(1.0)
    sigterm_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    # Readiness turns 503 while the server still listens: a refused connection fails here.
    deadline = time.monotonic() + 0.5  # the signal may land a moment after send_signal
    while True:
        probe = prober.get("/v2/health/ready").status_code
        if probe == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    prober.close()
    assert probe == 503
    code = server.proc.wait(4 + 3)
    exited_after = time.monotonic() - sigterm_at
    for thread in threads:
        thread.join(20)
    before = [o for o in outcomes if o.started < sigterm_at]
    after = [o for o in outcomes if o.started >= sigterm_at]
    assert code == 0, server.log_text()
    assert exited_after < 4 + 1.5
    assert before and all(o.kind == "ok" for o in before), {o.kind for o in before}
    # After SIGTERM, a request is either served or refused at connect: never reset mid-way.
    assert {o.kind for o in after} <= {"ok", "refused"}, [o.kind for o in after]
    assert "draining" in server.log_text()
