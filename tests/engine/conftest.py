"""The real Pulumi engine (scripts/bootstrap-engine) on a render-mode copy of the repository.

One session fixture prepares everything the engine tests share:
  * runs scripts/bootstrap-engine (a failure fails the tests: no skip) and reads its exports;
  * copies the repository into a tmp dir (without .venv, .git, .mlops, .tools and caches), with
    this interpreter's venv (sys.prefix) as the copy's .venv, which Pulumi.yaml names;
  * writes render-mode config into each stack file of the copy (render_dir in tmp, pinned image
    refs, artifacts create: false), so neither a cluster, Docker, S3 nor the network is needed;
  * uses a file:// backend in tmp with a fixed passphrase, and sets prod's secrets encrypted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import S3Service

REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = "test"
DIGEST = "@sha256:" + "ab" * 32
IMAGES = {
    "training": "ghcr.io/acme/mlops-train" + DIGEST,
    "serving": "ghcr.io/acme/mlops-serve" + DIGEST,
    "mlflow": "ghcr.io/acme/mlops-mlflow" + DIGEST,
    "registry": "docker.io/library/registry" + DIGEST,
}
# Secret values set on prod (and checked never to leak in plain text).
PROD_SECRETS = {
    "mlops:tracking_database_url": "postgresql://mlflow:Pg-Pass-4d1f9@db.example.internal:5432/mlflow",
    "mlops:container_registry_password": "ghp_RegistryToken7c3e",
    "mlops:s3_access_key_id": "AKIAENGINETEST0001",
    "mlops:s3_secret_access_key": "EngineTestSecretKey/9xQ2wZ7vB4",
    # Both stack files run bundled monitoring with Grafana.
    "mlops:grafana_admin_password": "Grafana-Admin-Pass-5e2a",
    # Prod's MLflow requires a login (docs/deploy.md, "Locked-down registry").
    "mlops:tracking_admin_password": "Mlflow-Admin-Pass-8b4c",
}
IGNORE = shutil.ignore_patterns(
    ".venv",
    ".git",
    ".mlops",
    ".tools",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "*.egg-info",
    "rendered",
    ".hypothesis",
)


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self) -> Run:
        assert self.returncode == 0, (
            f"`{' '.join(self.args)}` exited {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}"
        )
        return self


@dataclass
class Engine:
    project: Path  # the tmp copy of the repository
    env: dict[str, str]  # the bootstrap's exports + backend + passphrase
    render_dirs: dict[str, Path]
    state: Path
    timings: dict[str, float] = field(default_factory=dict)

    def pulumi(
        self,
        *args: str,
        stack: str | None = None,
        timeout: float = 180,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Run:
        cmd = ["pulumi", *args, "--non-interactive"]
        if stack:
            cmd += ["--stack", stack]
        start = time.monotonic()
        proc = subprocess.run(
            cmd,
            cwd=cwd or self.project,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        run = Run(cmd, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        self.timings[" ".join(args[:1] + ((stack,) if stack else ()))] = run.seconds
        return run

    def preview_json(self, stack: str, *extra: str) -> dict[str, Any]:
        run = self.pulumi("preview", "--json", *extra, stack=stack).check()
        return json.loads(run.stdout)

    def stack_file(self, stack: str) -> Path:
        return self.project / f"Pulumi.{stack}.yaml"

    def stack_config(self, stack: str) -> dict[str, Any]:
        return yaml.safe_load(self.stack_file(stack).read_text())["config"]

    def write_stack_config(self, stack: str, config: dict[str, Any]) -> None:
        doc = yaml.safe_load(self.stack_file(stack).read_text()) or {}
        doc["config"] = config
        self.stack_file(stack).write_text(yaml.safe_dump(doc, sort_keys=False))

    def manifests(self, stack: str) -> list[dict[str, Any]]:
        """Every object the provider wrote under the stack's render_dir."""
        objects: list[dict[str, Any]] = []
        for path in sorted(self.render_dirs[stack].rglob("*.yaml")):
            objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        return objects


def changed_steps(preview: dict[str, Any]) -> dict[str, set[str]]:
    """type::name -> the set of ops of every step that is not `same`."""
    out: dict[str, set[str]] = {}
    for step in preview.get("steps", []):
        if step.get("op") in (None, "same", "read", "refresh"):
            continue
        urn = step["urn"]
        type_, name = urn.split("::")[-2].split("$")[-1], urn.split("::")[-1]
        out.setdefault(f"{type_}::{name}", set()).add(step["op"])
    return out


def bootstrap_env() -> dict[str, str]:
    """Run scripts/bootstrap-engine and return the environment it exports (fails loudly)."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "bootstrap-engine"), "--print-env"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, (
        f"scripts/bootstrap-engine failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    env = dict(os.environ)
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line.startswith("export ") or "=" not in line:
            continue
        key, _, value = line[len("export ") :].partition("=")
        value = value.strip().strip('"')
        value = value.replace("$PATH", os.environ.get("PATH", ""))
        env[key] = value
    assert "PULUMI_HOME" in env and "PULUMI_ENGINE_BIN_DIR" in env, proc.stdout
    assert shutil.which("pulumi", path=env["PATH"]), f"no pulumi on the bootstrap PATH: {env['PATH']}"
    return env


def render_mode(config: dict[str, Any], render_dir: Path) -> dict[str, Any]:
    """The stack config with docs/deploy.md's render mode: manifests, pinned images, no bucket."""
    config = dict(config)
    kube = dict(config.get("mlops:kubernetes") or {})
    kube["render_dir"] = str(render_dir)
    config["mlops:kubernetes"] = kube
    images = dict(IMAGES)
    images.update(config.get("mlops:images") or {})  # keep prod's own digest-pinned refs
    config["mlops:images"] = images
    artifacts = dict(config.get("mlops:artifacts") or {})
    artifacts["create"] = False
    config["mlops:artifacts"] = artifacts
    return config


def new_engine(root: Path) -> Engine:
    """A copy of the repository under `root`, run by the bootstrap's engine on a backend of its own.

    The copy's .venv is this interpreter's venv (Pulumi.yaml's relative `virtualenv`); the backend is a
    file:// folder beside the copy, with a fixed passphrase. Stacks are left to the caller.
    """
    env = bootstrap_env()
    project = root / "project"
    shutil.copytree(REPO, project, ignore=IGNORE, symlinks=True)
    # Pulumi.yaml and the policy pack unchanged, as users have them (relative `virtualenv`):
    # the copy's .venv is this interpreter's, and infra/.venv points at it as in the repo.
    (project / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (project / "infra" / ".venv").symlink_to((REPO / "infra" / ".venv").readlink())
    state = root / "state"
    state.mkdir()
    env.update(
        PULUMI_BACKEND_URL=f"file://{state}",
        PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        PULUMI_SKIP_UPDATE_CHECK="1",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
    )
    env.pop("PULUMI_ACCESS_TOKEN", None)
    return Engine(project, env, {}, state)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory, s3: S3Service) -> Engine:
    root = tmp_path_factory.mktemp("engine")
    eng = new_engine(root)
    eng.render_dirs.update({s: root / "rendered" / s for s in ("dev", "prod")})
    for stack in ("dev", "prod"):
        eng.write_stack_config(stack, render_mode(eng.stack_config(stack), eng.render_dirs[stack]))
        eng.pulumi("stack", "init", stack).check()
    # dev reads its s3:// datasets from a real store (SeaweedFS) with the stack's own endpoint
    # and credentials, as `pulumi preview` does for users.
    dev = eng.stack_config("dev")
    dev["mlops:artifacts"] = {**dev["mlops:artifacts"], "endpoint_url": s3.endpoint_url}
    eng.write_stack_config("dev", dev)
    # The mocks render fills every unset secret with a placeholder (load_stack_file with
    # assume_secrets=True); setting them on both stacks gives the engine the same view.
    dev_secrets = {
        **PROD_SECRETS,
        "mlops:s3_access_key_id": s3.access_key,
        "mlops:s3_secret_access_key": s3.secret_key,
    }
    for stack, secrets in (("dev", dev_secrets), ("prod", PROD_SECRETS)):
        for key, value in secrets.items():
            eng.pulumi("config", "set", "--secret", key, value, stack=stack).check()
    return eng
