"""A rolling switch between two real server processes behind a Service-like proxy, under load.

The steps follow a Deployment's RollingUpdate with maxSurge 1 and maxUnavailable 0, as
components/serving.py declares it: start the new pod, route to it once its readiness probe
passes, then delete the old pod, which the endpoints controller takes out of rotation while the
kubelet runs the preStop sleep, sends SIGTERM and waits for the drain. Releases A and B are two
models of the same features (the random forest and the gradient boosting of the fixtures), so
every answer says by its `x-mlops-release-id` header and its predictions who served it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import Release, ServerProcess, copy_release, expected, split_body, wait_live
from tests.server.rolling_proxy import RollingProxy

DRAIN_SECONDS = 1.0
"""The pod's preStop sleep and the server's --drain-seconds (one setting in ModelServingArgs)."""
ENDPOINT_LAG = 0.3
"""How long after the pod's deletion the endpoint leaves rotation (the preStop sleep covers it)."""
PROGRESS_DEADLINE = 5.0
"""How long the rollout waits for the new pod to become ready (progressDeadlineSeconds)."""
CLIENTS = 6


@dataclass(frozen=True)
class Outcome:
    started: float
    finished: float
    kind: str
    """"ok", or what failed: a status, a wrong answer, a transport error."""
    release_id: str = ""


@dataclass
class Load:
    """Client threads sending valid requests back to back through the proxy, recording every
    outcome. Half keep their connection alive (pinned to one server until it closes it), half
    open one per request (routed afresh each time)."""

    url: str
    body: dict[str, Any]
    answers: dict[str, list[Any]]
    """The right predictions per release id."""
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client, args=(i % 2 == 0,)) for i in range(CLIENTS)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self, keep_alive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=None if keep_alive else 0)
        with httpx.Client(base_url=self.url, timeout=10, limits=limits) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = http.post("/invocations", json=self.body)
                except httpx.HTTPError as exc:
                    outcome = Outcome(started, time.monotonic(), type(exc).__name__)
                else:
                    outcome = self._judge(started, response)
                with self._lock:
                    self.outcomes.append(outcome)

    def _judge(self, started: float, response: httpx.Response) -> Outcome:
        release_id = response.headers.get("x-mlops-release-id", "")
        finished = time.monotonic()
        if response.status_code != 200:
            return Outcome(started, finished, f"HTTP {response.status_code}", release_id)
        if response.json()["predictions"] != self.answers.get(release_id):
            return Outcome(started, finished, "wrong answer", release_id)
        return Outcome(started, finished, "ok", release_id)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind != "ok"]

    def served_by(self, since: float = 0.0, until: float = float("inf")) -> set[str]:
        """Releases that answered requests sent and answered between `since` and `until`."""
        return {o.release_id for o in self.outcomes if since <= o.started and o.finished < until}


def _start_serving(process_factory: Any, folder: Path) -> ServerProcess:
    server: ServerProcess = process_factory(str(folder), "--drain-seconds", str(DRAIN_SECONDS))
    wait_live(server)
    return server


def _delete_pod(proxy: RollingProxy, name: str, server: ServerProcess) -> tuple[int, float]:
    """What a pod deletion does: the endpoint leaves rotation a moment later while the kubelet
    runs the preStop sleep, then SIGTERM; the exit code and when the process was gone."""
    timer = threading.Timer(ENDPOINT_LAG, proxy.remove, (name,))
    timer.start()
    time.sleep(DRAIN_SECONDS)
    timer.join()
    grace = DRAIN_SECONDS + 5  # terminationGracePeriodSeconds (the requests here take milliseconds)
    code = server.stop(grace)
    return code, time.monotonic()


@pytest.fixture()
def two_releases(releases: dict[str, Release]) -> tuple[Release, Release]:
    old, new = releases["rf"], releases["hgb"]
    assert old.columns == new.columns and old.release_id != new.release_id
    return old, new


@pytest.mark.slow
def test_rolling_switch_under_load_fails_no_request(
    two_releases: tuple[Release, Release], process_factory: Any
) -> None:
    old, new = two_releases
    frame = old.frame.sample(3, random_state=7)
    answers = {old.release_id: expected(old, frame), new.release_id: expected(new, frame)}
    a = _start_serving(process_factory, old.folder)
    with RollingProxy() as proxy:
        proxy.add("a", a.url)
        assert proxy.wait_ready("a", 60), a.log_text()
        with Load(proxy.url, split_body(frame), answers) as load:
            time.sleep(1.0)
            b = _start_serving(process_factory, new.folder)
            proxy.add("b", b.url)
            assert proxy.wait_ready("b", 60), b.log_text()
            time.sleep(0.5)  # both serve for a moment, as during a real rollout
            code, a_gone = _delete_pod(proxy, "a", a)
            time.sleep(1.0)
        b_state = proxy.endpoint("b")
        rotation = proxy.rotation()
        rejected = proxy.rejected
    assert load.failures() == [], load.failures()[:10]
    assert code == 0, a.log_text()
    assert "draining" in a.log_text()
    assert rejected == 0
    assert rotation == ["b"]
    # No connection reached B before its probe passed; before that, A answered everything.
    assert b_state.ready_since is not None and b_state.first_routed is not None
    assert b_state.first_routed >= b_state.ready_since
    assert load.served_by(until=b_state.ready_since) == {old.release_id}
    assert load.served_by(b_state.ready_since, a_gone) == {old.release_id, new.release_id}
    after = [o for o in load.outcomes if o.started >= a_gone]
    assert len(after) > 20 and {o.release_id for o in after} == {new.release_id}
    assert len(load.outcomes) > 200


@pytest.mark.slow
def test_release_that_never_becomes_ready_leaves_the_old_one_serving(
    two_releases: tuple[Release, Release], process_factory: Any, tmp_path: Path
) -> None:
    old, new = two_releases
    broken = copy_release(new, tmp_path)
    model_file = broken / "model" / "model.skops"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the checksum in release.json no longer matches
    model_file.write_bytes(bytes(data))
    frame = old.frame.sample(3, random_state=8)
    a = _start_serving(process_factory, old.folder)
    with RollingProxy() as proxy:
        proxy.add("a", a.url)
        assert proxy.wait_ready("a", 60), a.log_text()
        with Load(proxy.url, split_body(frame), {old.release_id: expected(old, frame)}) as load:
            time.sleep(0.5)
            b = _start_serving(process_factory, broken)
            proxy.add("b", b.url)
            became_ready = proxy.wait_ready("b", PROGRESS_DEADLINE)
            deadline = time.monotonic() + 60  # a slow machine may still be loading it
            while "model not loaded" not in b.log_text():
                assert time.monotonic() < deadline, b.log_text()
                time.sleep(0.1)
            with httpx.Client(base_url=b.url, timeout=5) as http:
                readiness = http.get("/v2/health/ready")
            # The rollout stalls and is rolled back: the new pod goes, the old one stays.
            proxy.remove("b")
            b.stop()
            time.sleep(0.5)
        b_state = proxy.endpoint("b")
        rotation = proxy.rotation()
    assert not became_ready
    assert readiness.status_code == 503 and readiness.json()["reason"] == "load_failed"
    assert "checksum" in b.log_text()
    assert b_state.routed == 0 and b_state.ready_since is None
    assert rotation == ["a"] and a.proc.poll() is None
    assert load.failures() == [], load.failures()[:10]
    assert load.served_by() == {old.release_id}
    assert len(load.outcomes) > 200
