"""More than one server process on the same ports: a supervisor and its workers.

One process runs its Python on one core at a time; on a pod given two cores, a second
process doubles what decoding and the event loop can do (as uvicorn's, KServe's and MLServer's
`--workers` do). Each worker is the ordinary server, started as `python -m model.server` with
the same settings, binding the ports with SO_REUSEPORT so that the kernel spreads connections
over them. What the workers share lives in one temporary folder: Prometheus' multiprocess
files (so a scrape of any worker counts every worker's requests), a marker per loaded worker
(the pod is ready when all are), and the drift windows (a scrape scores all of them).

The supervisor forwards SIGTERM/SIGINT to its workers, which drain as a single server does,
and exits 0 when they all did. A worker that exits on its own takes the others down and the
supervisor exits non-zero, so that Kubernetes restarts the container rather than leave it
serving at a fraction of its capacity.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from model.server.settings import ServerSettings, configure_logging

__all__ = ["METRICS_DIR", "WorkerSlot", "listening_socket", "supervise", "usable_cpus"]

log = logging.getLogger("mlops.server")

METRICS_DIR = "metrics"
"""Under the shared folder: PROMETHEUS_MULTIPROC_DIR of every worker."""
_STOP_MARGIN = 5.0
"""Seconds past the drain time before a worker that has not exited is killed."""
_POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1
_CGROUP = Path("/sys/fs/cgroup")


@dataclasses.dataclass(frozen=True)
class WorkerSlot:
    """One worker's place among its siblings, and the folder they share."""

    index: int
    count: int
    shared: Path

    @classmethod
    def of(cls, settings: ServerSettings) -> WorkerSlot | None:
        if settings.worker_index is None or settings.shared_dir is None:
            return None
        return cls(settings.worker_index, settings.workers, Path(settings.shared_dir))

    def ready_marker(self, index: int) -> Path:
        return self.shared / f"ready-{index}"

    def all_ready(self) -> bool:
        return all(self.ready_marker(i).exists() for i in range(self.count))


def usable_cpus(cgroup: Path = _CGROUP) -> float:
    """The CPUs this process may use: its cgroup's CPU quota (what a pod's CPU limit sets), or
    without one the cores it may run on. A container sees every core of its node in
    `os.cpu_count()` whatever its limit."""
    cores = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()  # cgroup v2: "max 100000" when unlimited
    except (OSError, ValueError):
        try:  # cgroup v1: -1 when unlimited
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return cores
    if quota in ("max", "-1"):
        return cores
    try:
        return min(cores, int(quota) / int(period))
    except (ValueError, ZeroDivisionError):
        return cores


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that the other workers bind as well (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"could not bind the HTTP port {host}:{port}: {exc}") from None
    sock.listen(2048)
    return sock


def _command(settings: ServerSettings, index: int, shared: Path) -> list[str]:
    """`python -m model.server` with every setting as a flag, for worker `index`."""
    command = [sys.executable, "-m", "model.server"]
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        flag = "--" + field.name.replace("_", "-")
        if field.name in ("worker_index", "shared_dir") or value is None:
            continue
        if isinstance(value, bool):
            command.append(flag if value else "--no-" + flag[2:])
        else:
            command += [flag, str(value)]
    return [*command, "--worker-index", str(index), "--shared-dir", str(shared)]


def _die_with_parent() -> None:
    """In the worker before exec: SIGTERM it if the supervisor dies (Linux), so that a killed
    supervisor leaves no server behind holding the ports."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _shell_code(code: int) -> int:
    """A worker's exit code as a shell reports it: 128 + the signal that killed it."""
    return 128 - code if code < 0 else code


class _Supervisor:
    def __init__(self, settings: ServerSettings, shared: Path) -> None:
        self._settings = settings
        self._shared = shared
        self._workers: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
        """By pid: the worker's index and process."""
        self._stop_deadline: float | None = None
        self.exit_code = 0

    def start(self) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self._shared / METRICS_DIR)}
        for index in range(self._settings.workers):
            # A process group of their own: a terminal's Ctrl-C reaches the supervisor alone,
            # which passes it on once (a second signal would make the workers skip the drain).
            process = subprocess.Popen(
                _command(self._settings, index, self._shared),
                env=env,
                preexec_fn=_die_with_parent,
                process_group=0,
            )
            self._workers[process.pid] = (index, process)

    def on_signal(self, sig: int, _frame: FrameType | None) -> None:
        log.info("signal %s: passing it to %d workers", signal.Signals(sig).name, len(self._workers))
        self._stop(sig)

    def _stop(self, sig: int) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self._settings.drain_seconds + _STOP_MARGIN
        for _, process in self._workers.values():
            process.send_signal(sig)

    def wait(self) -> int:
        """Until every worker has exited; the exit code for the supervisor."""
        while self._workers:
            pid, status = self._reap()
            if pid == 0 or pid not in self._workers:
                continue
            index, _ = self._workers.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self._stop_deadline is None:
                log.error("worker %d (pid %d) exited with %d: stopping the others", index, pid, code)
                self.exit_code = _shell_code(code) or 1
                self._stop(signal.SIGTERM)
            elif code != 0:
                log.error("worker %d (pid %d) exited with %d while draining", index, pid, code)
                self.exit_code = self.exit_code or _shell_code(code)
        return self.exit_code

    def _reap(self) -> tuple[int, int]:
        """The next worker that exited, or (0, 0) after a short sleep; kills the workers still
        running once a stop has taken longer than the drain time allows."""
        if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
            for index, process in self._workers.values():
                log.error("worker %d (pid %d) did not exit in time: killing it", index, process.pid)
                process.kill()
            self._stop_deadline = float("inf")
            self.exit_code = self.exit_code or 1
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(_POLL_SECONDS)  # a signal's handler runs during the sleep
        return pid, status


def supervise(settings: ServerSettings) -> None:
    """Run `settings.workers` workers until they have all exited; SystemExit unless all drained."""
    configure_logging(settings)
    shared = Path(tempfile.mkdtemp(prefix="mlops-server-"))
    (shared / METRICS_DIR).mkdir()
    supervisor = _Supervisor(settings, shared)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, supervisor.on_signal)
    log.info(
        "starting %d workers on %s:%d (gRPC %s)",
        settings.workers,
        settings.host,
        settings.port,
        settings.grpc_port or "off",
    )
    try:
        supervisor.start()
        code = supervisor.wait()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    if code:
        raise SystemExit(code)
