"""The peer servers of the serving benchmark: their virtual environments, models and launch commands.

Seldon MLServer (with mlserver-sklearn) and KServe's Python model server each get their own
virtual environment under `.tools/bench-peers/<name>` (git-ignored), installed from the
frozen requirement files beside this module (`benchmarks/peers/<name>.txt`) with the same
Python, scikit-learn and numpy as ours; the environment is rebuilt when its file changes.

Both serve the fitted pipeline of the same release, exported with joblib (what mlserver-sklearn
and KServe's sklearn server load), from their own documented entry points: `mlserver start`
on a folder with settings.json and model-settings.json; for KServe, a `kserve.Model` that does
what KServe's sklearnserver does (`peer_kserve_model.py`). Each peer runs in two ways: as a user
first starts it, and with its best settings for 2 cores (see PEER_SETTINGS).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PEER_SETTINGS",
    "PeerLaunch",
    "ensure_peer_env",
    "export_joblib",
    "launch_kserve",
    "launch_mlserver",
    "peer_versions",
]

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = REPO / ".tools" / "bench-peers"
LOCKS = Path(__file__).resolve().parent / "peers"

PEER_SETTINGS = {
    "mlserver": "defaults: one inference worker process, no adaptive batching",
    "mlserver-tuned": (
        "parallel_workers=2 (one per core), adaptive batching max_batch_size=16, max_batch_time=2 ms"
    ),
    "kserve": "defaults: one process (workers=1)",
    "kserve-tuned": "workers=2 (one REST process per core)",
}
"""What each peer configuration changes; the tuned ones follow each project's advice for throughput."""


@dataclass(frozen=True)
class PeerLaunch:
    """How to start one server: `start(http_port, grpc_port, log)` and the model name it serves."""

    name: str
    model_name: str
    start: Callable[[int, int, Path], subprocess.Popen[bytes]]
    binary_http: bool
    """Whether it takes the V2 binary data extension over HTTP."""


def ensure_peer_env(name: str, log: Callable[[str], None] = print) -> Path:
    """The peer's Python, installing its environment first when missing or out of date."""
    lock = LOCKS / f"{name}.txt"
    venv = PEERS_DIR / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements.sha256"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    log(f"installing {name} into {venv} from {lock.relative_to(REPO)} (a few minutes, once)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(lock)], check=True)
    stamp.write_text(want)
    return python


def peer_versions(python: Path, packages: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import json, sys\nfrom importlib.metadata import version\n"
        "print(json.dumps({p: version(p) for p in sys.argv[1:]}))"
    )
    out = subprocess.run([str(python), "-c", code, *packages], check=True, capture_output=True, text=True)
    versions: dict[str, str] = json.loads(out.stdout)
    return versions


def export_joblib(release: Path, target: Path) -> Path:
    """The release's fitted pipeline as model.joblib for the peers (loaded with our checks first).

    The pipeline was fitted on a DataFrame; the peers hand it numpy arrays, on which scikit-learn
    warns about missing feature names on every call. The names are dropped from the copy so that
    the peers do not pay for that warning; predictions do not change.
    """
    import joblib

    from model.artifact import ReleaseMetadata, load_sklearn_model

    meta = ReleaseMetadata.from_json((release / "release.json").read_text())
    pipeline = load_sklearn_model(release / "model", meta.estimator, meta.task, meta.model_sha256)
    for _, step in pipeline.steps:
        if hasattr(step, "feature_names_in_"):
            del step.feature_names_in_
    target.mkdir(parents=True, exist_ok=True)
    path = target / "model.joblib"
    joblib.dump(pipeline, path)
    return path


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The same thread settings as our server gets: one BLAS/OpenMP thread per process.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {**env, **(extra or {})}


def launch_mlserver(python: Path, model: Path, model_name: str, workdir: Path, tuned: bool) -> PeerLaunch:
    """`mlserver start` on a folder holding settings.json and model-settings.json."""
    name = "mlserver-tuned" if tuned else "mlserver"
    folder = workdir / f"{name}-{model_name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.joblib").write_bytes(model.read_bytes())
    model_settings: dict[str, object] = {
        "name": model_name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"},
    }
    if tuned:
        model_settings |= {"max_batch_size": 16, "max_batch_time": 0.002}
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    mlserver = python.parent / "mlserver"

    def start(http_port: int, grpc_port: int, log: Path) -> subprocess.Popen[bytes]:
        settings = {
            "host": "127.0.0.1",
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_port": 0,
            "parallel_workers": 2 if tuned else 1,
            "debug": False,
        }
        (folder / "settings.json").write_text(json.dumps(settings))
        with log.open("ab") as out:
            return subprocess.Popen(
                [str(mlserver), "start", str(folder)],
                cwd=folder,
                env=_env({"PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return PeerLaunch(name, model_name, start, binary_http=False)


def launch_kserve(python: Path, model: Path, model_name: str, tuned: bool) -> PeerLaunch:
    """KServe's ModelServer with the sklearnserver's predict (peer_kserve_model.py)."""
    name = "kserve-tuned" if tuned else "kserve"
    script = Path(__file__).resolve().parent / "peer_kserve_model.py"

    def start(http_port: int, grpc_port: int, log: Path) -> subprocess.Popen[bytes]:
        args = [str(python), str(script), "--model_name", model_name, "--model_path", str(model)]
        args += ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        args += ["--workers", "2" if tuned else "1"]
        with log.open("ab") as out:
            return subprocess.Popen(
                args,
                cwd=model.parent,
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return PeerLaunch(name, model_name, start, binary_http=True)
