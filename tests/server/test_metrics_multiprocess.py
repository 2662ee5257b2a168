"""The metrics of several workers (Prometheus' multiprocess files): updates ask the kernel for
nothing, and a forked process still counts in a file of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

ROOT = Path(__file__).resolve().parents[2]

_WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    # Counted from before prometheus_client binds it as its default process identifier.
    real_getpid, asked = os.getpid, []
    os.getpid = lambda: asked.append(1) or real_getpid()
    from model.server.metrics import ServerMetrics

    asked.clear()  # the imports' own
    metrics = ServerMetrics(Path(sys.argv[1]))
    for _ in range(100):
        metrics.observe_request("/v2/models/{name}/infer", "POST", 200, 0.001)
    print(len(asked), flush=True)
    child = os.fork()
    if child == 0:
        metrics.observe_request("/v2/models/{name}/infer", "POST", 200, 0.001)
        os._exit(0)
    os.waitpid(child, 0)
    print(real_getpid(), child)
    """
)


def test_updates_do_not_ask_for_the_pid_and_a_fork_counts_apart(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    asked, pids = done.stdout.splitlines()
    assert asked == "0"  # 300 updates (a counter, a histogram's sum and bucket), no getpid
    parent, child = pids.split()
    assert {p.name for p in tmp_path.glob("counter_*.db")} == {f"counter_{parent}.db", f"counter_{child}.db"}
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))
    labels = {"protocol": "http", "route": "/v2/models/{name}/infer", "method": "POST", "status": "200"}
    assert registry.get_sample_value("mlops_server_requests_total", labels) == 101
