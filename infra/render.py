"""`mlops render`: a stack's desired state, credential-free, like `helm template`.

Runs the real program (`infra/__main__.py`, nothing forked) under Pulumi's official mocks with
the stack's YAML config, and writes deterministically:

    <out>/resources.yaml        every declared resource: type, name, parent, inputs (secrets masked)
    <out>/outputs.yaml          the stack outputs
    <out>/manifests/<namespace|_cluster>/<kind>-<name>.yaml   every Kubernetes object

Secrets are never decrypted: every secret config key is replaced by a placeholder and every
secret value is written as `[secret]`. Values only the engine or a provider knows (image digests,
a trained release's checksum and version, random name suffixes) come from `RecordingMocks` and
are marked with "render" in them where they are not fully determined by the inputs.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import os
import runpy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime.mocks import Mocks

from components.providers.model_alias import MLOPS_KIND as MODEL_ALIAS_KIND
from components.providers.release_record import MLOPS_KIND as RELEASE_RECORD_KIND
from components.providers.s3_bucket import MLOPS_KIND as S3_BUCKET_KIND
from infra.config import (
    NAMESPACE,
    PROJECT_FILE,
    SECRET_KEYS,
    SECRET_PLACEHOLDER,
    _build,
    _read_yaml,
    read_stack_config,
    secret_placeholders,
)
from infra.config import (
    project_dir as find_project_dir,
)

__all__ = [
    "MASK",
    "RecordingMocks",
    "RenderResult",
    "RenderedResource",
    "mocked_runtime",
    "render_stack",
    "run_program",
]

MASK = SECRET_PLACEHOLDER
"""What a secret value renders as: the placeholder the config module substitutes too."""
DYNAMIC_TYPE = "pulumi-python:dynamic:Resource"


@dataclass(frozen=True)
class RenderedResource:
    """One declared resource as the engine would receive it."""

    type: str
    name: str
    parent: str | None
    """`<type>::<name>` of the parent resource; None for the stack itself."""
    custom: bool
    inputs: dict[str, Any]
    """Inputs with secrets replaced by MASK (Kubernetes objects: camelCase, with apiVersion/kind)."""
    ignore_changes: list[str] = field(default_factory=list)
    """Property paths the engine keeps from the stack's state (`ignore_changes`): not a diff."""
    protect: bool = False
    """The `protect` option (inherited from the parent): the engine refuses to delete it."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "inputs": self.inputs,
        }
        if self.ignore_changes:
            out["ignore_changes"] = self.ignore_changes
        if self.protect:
            out["protect"] = True
        return out


@dataclass(frozen=True)
class RenderResult:
    stack: str
    out_dir: Path | None
    resources: list[RenderedResource]
    outputs: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def kubernetes_objects(self) -> list[dict[str, Any]]:
        """Every Kubernetes object's manifest (custom resources of the kubernetes package).

        An object declared without `metadata.name` is shown with its logical name; the real
        provider appends a random suffix to it.
        """
        objects = []
        for r in self.resources:
            if _is_kubernetes_object(r):
                meta = dict(r.inputs.get("metadata") or {})
                meta.setdefault("name", r.name)
                objects.append({**r.inputs, "metadata": meta})
        return objects

    def policy_resources(self) -> list[dict[str, Any]]:
        """Every declared resource in the policy pack's shape: {type, name, props, stack, protect}."""
        return [
            {"type": r.type, "name": r.name, "props": r.inputs, "stack": self.stack, "protect": r.protect}
            for r in self.resources
            if r.custom
        ]

    def find(self, type_: str, name: str) -> RenderedResource:
        for resource in self.resources:
            if resource.type == type_ and resource.name == name:
                return resource
        raise KeyError(f"no {type_} named {name!r} in the render of {self.stack}")


def _is_kubernetes_object(resource: RenderedResource) -> bool:
    return resource.custom and resource.type.startswith("kubernetes:") and "kind" in resource.inputs


# ---------------------------------------------------------------------------------------------
# Mocks


def _unwrap_secrets(value: Any) -> tuple[Any, Any]:
    """(plain value, masked value) of a deserialized input tree holding wrapped RPC secrets."""
    from pulumi.runtime import rpc

    if rpc.is_rpc_secret(value):
        plain, _ = _unwrap_secrets(rpc.unwrap_rpc_secret(value))
        return plain, _mask_leaves(plain)
    if isinstance(value, float) and value.is_integer():
        # The wire format has only doubles; Kubernetes fields here are integers.
        return int(value), int(value)
    if isinstance(value, dict):
        pairs = {k: _unwrap_secrets(v) for k, v in value.items()}
        return {k: p for k, (p, _) in pairs.items()}, {k: m for k, (_, m) in pairs.items()}
    if isinstance(value, list):
        pairs_list = [_unwrap_secrets(v) for v in value]
        return [p for p, _ in pairs_list], [m for _, m in pairs_list]
    return value, value


def _mask_leaves(value: Any) -> Any:
    """A secret map or list keeps its shape (keys are not secret); every leaf becomes MASK."""
    if isinstance(value, dict):
        return {k: _mask_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_leaves(v) for v in value]
    return MASK


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class RecordingMocks(Mocks):
    """Pulumi mocks that record (type, name, inputs) and answer like the providers would.

    Outputs use the engine's camelCase keys. Kubernetes objects echo their inputs (as the
    provider returns the applied object) with `metadata.name` defaulting to the logical name.
    """

    def __init__(self) -> None:
        self.resources: list[RenderedResource] = []

    # pulumi.runtime.Mocks interface
    def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None

    def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
        state, _ = _unwrap_secrets(args.inputs)
        typ, name = args.typ, args.name
        if typ.startswith("kubernetes:") and isinstance(state.get("metadata"), dict | type(None)):
            metadata = dict(state.get("metadata") or {})
            metadata.setdefault("name", name)
            state = {**state, "metadata": metadata}
            namespace = metadata.get("namespace")
            return (f"{namespace}/{metadata['name']}" if namespace else metadata["name"]), state
        if typ == "docker:index/image:Image":
            image_name = str(state.get("imageName", ""))
            repository = image_name.rsplit(":", 1)[0] if ":" in image_name.rsplit("/", 1)[-1] else image_name
            build = state.get("build") or {}
            digest = _digest("render-build", image_name, str(build.get("dockerfile")))
            return image_name, {
                **state,
                "repoDigest": f"{repository}@sha256:{digest}",
                "baseImageName": image_name,
                "registryServer": (state.get("registry") or {}).get("server", ""),
            }
        if typ == DYNAMIC_TYPE and "release_uri" in state:
            uri = str(state["release_uri"])
            return f"{state['model_name']}/{state['release_id']}", {
                **state,
                "model_sha256": _digest("render-model", uri),
                "gates_passed": True,
                "model_version": "1",
                "mlops_kind": RELEASE_RECORD_KIND,
            }
        if typ == DYNAMIC_TYPE and "alias" in state and "tracking_uri" in state:
            return f"{state['model_name']}@{state['alias']}", {
                **state,
                "previous_version": "",
                "mlops_kind": MODEL_ALIAS_KIND,
            }
        if typ == DYNAMIC_TYPE and "bucket_name" in state:
            return str(state["bucket_name"]), {
                **state,
                "uri": f"s3://{state['bucket_name']}",
                "mlops_kind": S3_BUCKET_KIND,
            }
        return (f"{name}-id" if args.custom else None), state


def _recording_monitor(mocks: RecordingMocks) -> Any:
    from pulumi.runtime import rpc
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):
        """Adds what MockResourceArgs leaves out: the parent and which inputs are secret."""

        def RegisterResource(self, request: Any) -> Any:
            if request.type != "pulumi:pulumi:Stack":
                _, masked = _unwrap_secrets(rpc.deserialize_properties(request.object))
                if "__provider" in masked:
                    masked["__provider"] = "[serialized dynamic provider]"
                mocks.resources.append(
                    RenderedResource(
                        type=request.type,
                        name=request.name,
                        parent=_urn_ref(request.parent) if request.parent else None,
                        custom=bool(request.custom),
                        inputs=masked,
                        ignore_changes=sorted(request.ignoreChanges),
                        protect=bool(request.protect),
                    )
                )
            return super().RegisterResource(request)

    return RecordingMonitor(mocks)


def _urn_ref(urn: str) -> str:
    # urn:pulumi:<stack>::<project>::<parent types$>type::<name>
    parts = urn.split("::", 3)
    return f"{parts[2].split('$')[-1]}::{parts[3]}"


@contextmanager
def mocked_runtime(
    stack: str,
    config: dict[str, str],
    secret_keys: list[str],
    project: str = NAMESPACE,
) -> Iterator[tuple[RecordingMocks, Callable[[Callable[[], Any]], Any]]]:
    """Install Pulumi mocks and config in a fresh context; yields (mocks, run).

    `run(fn)` calls fn inside that context and waits for every registration it started, so
    checks can read `mocks.resources`. The caller's runtime state is untouched afterwards.
    """
    _ensure_event_loop()
    context = contextvars.copy_context()
    mocks = RecordingMocks()

    def setup() -> None:
        import pulumi.runtime
        from pulumi.runtime import settings

        settings.ROOT.set(None)
        pulumi.runtime.set_all_config(dict(config), list(secret_keys))
        pulumi.runtime.set_mocks(
            mocks, project=project, stack=stack, preview=False, monitor=_recording_monitor(mocks)
        )

    context.run(setup)

    def run(fn: Callable[[], Any]) -> Any:
        from pulumi.runtime.stack import run_pulumi_func
        from pulumi.runtime.sync_await import _sync_await

        box: list[Any] = []

        def body() -> None:
            box.append(fn())

        context.run(lambda: _sync_await(run_pulumi_func(body)))
        return box[0] if box else None

    yield mocks, run


def _ensure_event_loop() -> None:
    """Pulumi's resources create futures on the thread's current event loop. A process that ran
    `asyncio.run` before (a test, the Automation API) is left with none, and Python 3.11 then
    raises instead of making one."""
    try:
        if not asyncio.get_event_loop_policy().get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def resolve(run: Callable[[Callable[[], Any]], Any], value: Any) -> Any:
    """The plain value of an Output (or a structure of them) inside `mocked_runtime`."""
    import pulumi
    from pulumi.runtime.sync_await import _sync_await

    box: list[Any] = []

    def body() -> None:
        box.append(_sync_await(pulumi.Output.from_input(value).future()))

    run(body)
    return box[0]


# ---------------------------------------------------------------------------------------------
# The render


def stack_config(stack: str, root: Path) -> tuple[dict[str, str], list[str]]:
    """The stack's config as the engine hands it to the program (strings; objects as JSON)."""
    raw = secret_placeholders(read_stack_config(stack, root), assume_secrets=True)
    # Validate before running anything: errors name the stack file and the key.
    _build(stack, raw, f"Pulumi.{stack}.yaml")
    config: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            continue
        config[f"{NAMESPACE}:{key}"] = value if isinstance(value, str) else json.dumps(value)
    stack_file = _read_yaml(root / f"Pulumi.{stack}.yaml").get("config") or {}
    for full_key, value in stack_file.items():  # other providers' keys, passed through
        if not str(full_key).startswith(NAMESPACE + ":"):
            config[str(full_key)] = value if isinstance(value, str) else json.dumps(value)
    return config, [f"{NAMESPACE}:{key}" for key in SECRET_KEYS]


def run_program(stack: str, project_dir: Path | None = None) -> RenderResult:
    """Run the stack's program under mocks; nothing is written."""
    root = find_project_dir(project_dir)
    main = _read_yaml(root / PROJECT_FILE).get("main") or "."
    program = (root / str(main) / "__main__.py").resolve()
    config, secret_keys = stack_config(stack, root)
    previous = Path.cwd()
    os.chdir(root)  # the program sees what `pulumi up` in the project folder sees
    try:
        with mocked_runtime(stack, config, secret_keys) as (mocks, run):
            run(lambda: runpy.run_path(str(program), run_name="__main__"))

            def stack_outputs() -> dict[str, Any]:
                from pulumi.runtime.settings import get_root_resource

                root_resource = get_root_resource()
                return dict(getattr(root_resource, "outputs", {}) or {})

            raw_outputs = run(stack_outputs)
            outputs = {k: _mask_output(run, v) for k, v in sorted(raw_outputs.items())}
    finally:
        os.chdir(previous)
    return RenderResult(stack=stack, out_dir=None, resources=list(mocks.resources), outputs=outputs)


def _mask_output(run: Callable[[Callable[[], Any]], Any], value: Any) -> Any:
    import pulumi

    box: list[Any] = []

    def body() -> None:
        from pulumi.runtime.sync_await import _sync_await

        output = pulumi.Output.from_input(value)
        secret = _sync_await(output.is_secret())
        box.append(MASK if secret else _sync_await(output.future()))

    run(body)
    return box[0]


def render_stack(stack: str, out_dir: Path | None = None, project_dir: Path | None = None) -> RenderResult:
    """Render a stack into `out_dir` (default: <project>/.mlops/render/<stack>), replacing its contents."""
    root = find_project_dir(project_dir)
    result = run_program(stack, root)
    target = out_dir or root / ".mlops" / "render" / stack
    files = write_render(result, target)
    return RenderResult(stack, target, result.resources, result.outputs, files)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, width=100)


def write_render(result: RenderResult, target: Path) -> list[Path]:
    import shutil

    if target.exists():
        shutil.rmtree(target)
    (target / "manifests").mkdir(parents=True)
    ordered = sorted(result.resources, key=lambda r: (r.parent or "", r.type, r.name))
    files = [target / "resources.yaml", target / "outputs.yaml"]
    files[0].write_text(_dump({"stack": result.stack, "resources": [r.as_dict() for r in ordered]}))
    files[1].write_text(_dump(result.outputs))
    for obj in sorted(result.kubernetes_objects, key=_object_key):
        meta = obj.get("metadata") or {}
        folder = target / "manifests" / str(meta.get("namespace") or "_cluster")
        folder.mkdir(exist_ok=True)
        path = folder / f"{obj['kind'].lower()}-{meta.get('name')}.yaml"
        path.write_text(_dump(obj))
        files.append(path)
    return files


def _object_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(obj.get("kind")), str(meta.get("name")))
