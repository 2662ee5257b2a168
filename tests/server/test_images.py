"""The serving and training images install every distribution their code loads.

There is no Docker engine here, so the images cannot be built in the tests. What can go
wrong without anyone noticing is the package list each Dockerfile installs: a module the
code imports lazily (onnx at training, uvloop picked by uvicorn when present) is missing,
and the image silently runs a slower path or fails only in the cluster. So each test runs
the image's entrypoint path in a clean interpreter, maps every loaded module to its
distribution, and checks that the Dockerfile's list (with what those packages require)
covers them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from model.lineage import training_code_files
from model.spec import RegistrySettings
from tests.server.conftest import REPO, Release, copy_release

# In the python:3.11-slim base image already; this repository's own package is copied as source.
_BASE_IMAGE = {"pip", "setuptools", "wheel", "mlops-pulumi"}
# Imported only when installed: scikit-learn's test helpers (which skops loads) try pytest,
# FastAPI (which MLflow loads) tries orjson, and urllib3 tries brotli (which the interop
# tests' tritonclient HTTP stack brings).
_OPTIONAL = {"pytest", "pluggy", "iniconfig", "orjson", "brotli"}

_REPORT = """
import atexit, json, os, sys
from importlib import metadata
_OUT = sys.argv.pop(1)
def _report():
    with open(_OUT + ".modules", "w") as out:
        json.dump(sorted(sys.modules), out)
    modules = list(sys.modules.values())
    loaded = {os.path.normpath(m.__file__) for m in modules if getattr(m, "__file__", None)}
    found = set()
    # By file, not by top-level name: namespace packages (google, opentelemetry) are shared.
    for dist in metadata.distributions():
        base = str(dist.locate_file(""))
        if any(os.path.normpath(os.path.join(base, str(f))) in loaded for f in dist.files or []):
            found.add(dist.metadata["Name"])
    with open(_OUT, "w") as out:
        json.dump(sorted(found), out)
atexit.register(_report)
"""


def _requirements_of(dockerfile: Path) -> Path:
    match = re.search(r"^COPY (images/requirements/\S+\.txt) ", dockerfile.read_text(), re.MULTILINE)
    assert match, f"{dockerfile} does not install from a file under images/requirements/"
    return REPO / match.group(1)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[str(canonicalize_name(name))] = version.strip()
    return pins


def _installed_by(dockerfile: Path) -> set[str]:
    """The packages the Dockerfile's requirements file pins, with their dependencies."""
    pending: list[str] = list(_pins(_requirements_of(dockerfile)))
    closure: set[str] = set()
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return closure


def test_every_image_pins_what_the_venv_has() -> None:
    """One version per package across the images' files, and the one the tests run."""
    seen: dict[str, tuple[str, Path]] = {}
    for path in sorted((REPO / "images" / "requirements").glob("*.txt")):
        for name, version in _pins(path).items():
            first = seen.setdefault(name, (version, path))
            assert first[0] == version, f"{name}: {version} in {path.name}, {first[0]} in {first[1].name}"
    requirements = (REPO / "requirements.txt").read_text()
    for included in ("training", "serving"):  # the MLflow image's database driver is not tested here
        assert f"-r images/requirements/{included}.txt" in requirements
        for name, version in _pins(REPO / "images" / "requirements" / f"{included}.txt").items():
            assert metadata.version(name) == version, f"{name} {version} in {included}.txt, venv has another"


def test_the_training_image_leaves_the_server_out() -> None:
    """The training Job's image changes only with the training code (the files the id hashes)."""
    dockerfile = (REPO / "images" / "Dockerfile.train").read_text()
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copied == ["images/requirements/training.txt", "model/"]
    listed = subprocess.run(
        [
            sys.executable,
            "scripts/cluster.d/context_key.py",
            ".",
            "images/Dockerfile.train",
            "images/Dockerfile.train.dockerignore",
            "--list",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    in_image = {f for f in listed if f.startswith("model/")}
    hashed = {p.relative_to(REPO).as_posix() for p in training_code_files()}
    assert in_image == hashed, (sorted(in_image - hashed), sorted(hashed - in_image))
    assert "model/server/app.py" not in in_image and "model/retrain_trigger.py" not in in_image


def _loaded_by(code: str, *args: str, tmp_path: Path) -> set[str]:
    report = tmp_path / "distributions.json"
    subprocess.run(
        [sys.executable, "-c", _REPORT + code, str(report), *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    found = {str(canonicalize_name(name)) for name in json.loads(report.read_text())}
    return found - _BASE_IMAGE - _OPTIONAL


def test_serving_image_has_what_the_server_loads(releases: dict[str, Release], tmp_path: Path) -> None:
    # Both runtimes (numpy, onnxruntime), the scikit-learn fallback, the HTTP stack uvicorn
    # picks ("auto" takes uvloop and httptools when they are installed) and the gRPC service.
    without_bundle = copy_release(releases["rf"], tmp_path, without_runtime=True)
    code = f"""
from uvicorn.config import Config
from model.artifact import directory_checksum
from model.server.__main__ import app
from model.server.app import create_app
from model.server.loader import load_release
from model.server.settings import ServerSettings
from pathlib import Path
for folder in {[str(releases["lr"].folder), str(releases["rf"].folder)]!r}:
    load_release(folder, None, None)
plain = Path({str(without_bundle)!r})
assert load_release(str(plain), directory_checksum(plain / "model"), None).runtime.name == "scikit-learn"
config = Config(create_app(ServerSettings(model_uri=str(plain))))
config.load()
config.get_loop_factory()
import model.server.grpc_service
"""
    loaded = _loaded_by(code, tmp_path=tmp_path)
    assert {"onnxruntime", "uvloop", "httptools", "scikit-learn", "grpcio", "open-inference-grpc"} <= loaded
    missing = loaded - _installed_by(REPO / "images" / "Dockerfile.serve")
    assert not missing, f"images/Dockerfile.serve does not install {sorted(missing)}"


def test_training_image_has_what_training_loads(
    workdir: Path, registry: RegistrySettings, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "model_name": "image-check-rf",
                "dataset": "sklearn:breast_cancer",
                "target": "target",
                "task": "classification",
                "estimator": "random_forest",
                "params": {"n_estimators": 5},
            }
        )
    )
    code = """
import runpy
runpy.run_module("model.train", run_name="__main__")
"""
    loaded = _loaded_by(
        code,
        "--spec",
        str(spec),
        "--tracking-uri",
        str(registry.tracking_uri),
        "--artifact-root",
        str(registry.artifact_root),
        "--json",
        tmp_path=tmp_path,
    )
    # The precompiled serving runtime is built (onnx) and checked (onnxruntime) at training.
    assert {"onnx", "onnxruntime", "mlflow", "skops"} <= loaded
    modules = json.loads((tmp_path / "distributions.json.modules").read_text())
    assert "model.runtime" in modules and not [m for m in modules if m.startswith("model.server")]
    missing = loaded - _installed_by(REPO / "images" / "Dockerfile.train")
    assert not missing, f"images/Dockerfile.train does not install {sorted(missing)}"
