"""Pieces every component shares: labels, pod security, images (sources, pushing, pull secrets), volumes.

Kept free of any `pulumi.Config` access: components get everything through their Args.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s

__all__ = [
    "PART_OF",
    "REPO_ROOT",
    "S3_CREDENTIAL_KEYS",
    "UNRESOLVED",
    "Component",
    "ImageAccess",
    "ImageSource",
    "PushTarget",
    "WorkloadAccess",
    "container_security_context",
    "docker_config",
    "image_pull_secret",
    "image_reference",
    "labels",
    "object_name",
    "pod_security_context",
    "protected",
    "resources",
    "secret_env",
    "service_address",
    "service_url",
    "volume_claim",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
PART_OF = "mlops"
UNRESOLVED = "unresolved"
"""A registered version nothing has read yet (render mode: the Job is written, never run)."""
Component = Literal["serving", "training", "registry", "image-registry", "monitoring"]
"""Values of `app.kubernetes.io/component` the policy pack knows."""


def labels(app: str, component: Component, stack: str) -> dict[str, str]:
    """The labels every Kubernetes object carries (the policy pack relies on them)."""
    return {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
        "mlops.dev/stack": stack,
    }


def object_name(resource: Any) -> pulumi.Output[str]:
    """A Kubernetes object's name, from the object itself (so dependents wait for it)."""
    return resource.metadata.apply(lambda m: str(m.name))


def service_address(service: Any, port: pulumi.Input[str]) -> pulumi.Output[str]:
    """<name>.<namespace>.svc.cluster.local:<port>, from the Service itself."""
    return pulumi.Output.concat(
        object_name(service),
        ".",
        service.metadata.apply(lambda m: str(m.namespace)),
        ".svc.cluster.local:",
        port,
    )


def service_url(service: Any) -> pulumi.Output[str]:
    """http:// and the address of the Service's first port."""
    first_port = service.spec.apply(lambda s: str((s.ports or [])[0].port))
    return pulumi.Output.concat("http://", service_address(service, first_port))


def pod_security_context(uid: int = 10001) -> dict[str, Any]:
    """Pod-level settings that satisfy the `restricted` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


@dataclass(frozen=True)
class ImageSource:
    """An image to deploy: a reference used as given, or a Dockerfile in this repo to build and push."""

    ref: pulumi.Input[str] | None = None
    """Deploy this reference as is (prod: pinned by digest; or another component's image, such as
    ModelServing.image, so that one build serves both); no Docker engine is needed."""
    dockerfile: str | None = None
    """Repo-relative Dockerfile to build when `ref` is unset, e.g. images/Dockerfile.serve."""
    repository: str | None = None
    """Repository name under the push server, e.g. mlops-serve."""
    tag: str = "latest"
    """Tag pushed; the deployed reference is the pushed digest (repo_digest), never the tag."""
    platform: str | None = None
    """Build platform such as linux/amd64; unset: the engine's default."""

    def __post_init__(self) -> None:
        if self.ref is None and (self.dockerfile is None or self.repository is None):
            raise ValueError(
                f"ImageSource needs ref, or dockerfile and repository (got ref=None, "
                f"dockerfile={self.dockerfile!r}, repository={self.repository!r})"
            )
        if self.dockerfile is not None and not (REPO_ROOT / self.dockerfile).is_file():
            raise ValueError(f"ImageSource.dockerfile {self.dockerfile!r} does not exist under {REPO_ROOT}")


@dataclass(frozen=True)
class PushTarget:
    """The registry images are pushed to."""

    server: pulumi.Input[str]
    """host[:port][/path] as seen by the Docker engine that builds, e.g. localhost:30500 or ghcr.io/acme."""
    username: pulumi.Input[str] | None = None
    password: pulumi.Input[str] | None = None
    """Secret."""


S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
"""Keys of the artifact-store credentials Secret, named as the AWS SDKs read them from the env."""


def secret_env(secret_name: pulumi.Input[str], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Container env entries reading each key of a Secret into a variable of the same name."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}} for key in keys]


@dataclass(frozen=True, kw_only=True)
class ImageAccess:
    """Where a workload's image is pushed to and pulled from (RetrainTrigger's, and the base of
    WorkloadAccess)."""

    push_target: PushTarget | None = None
    """Registry to push a built image to; required when `image` is built."""
    image_pull_secret_name: pulumi.Input[str] | None = None
    """dockerconfigjson Secret for a private registry."""

    def _check_push_target(self, image: ImageSource) -> None:
        if image.ref is None and self.push_target is None:
            raise ValueError("push_target is required when the image is built (image.ref is None)")

    def add_pull_secret(self, pod_spec: dict[str, Any]) -> None:
        if self.image_pull_secret_name is not None:
            pod_spec["imagePullSecrets"] = [{"name": self.image_pull_secret_name}]


@dataclass(frozen=True, kw_only=True)
class WorkloadAccess(ImageAccess):
    """How a workload gets its image and reaches the registry and artifact store.

    The fields TrainingJobArgs and ModelServingArgs share; ModelRegistry's outputs of the
    same names fill them.
    """

    s3_endpoint_url: pulumi.Input[str] | None = None
    """S3 endpoint for pods (MLFLOW_S3_ENDPOINT_URL); None for AWS."""
    s3_secret_name: pulumi.Input[str] | None = None
    """Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; None: ambient credentials."""

    def s3_env(self) -> list[dict[str, Any]]:
        """Container env for the artifact store: its endpoint and the credentials' secret keys."""
        env: list[dict[str, Any]] = []
        if self.s3_endpoint_url is not None:
            env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": self.s3_endpoint_url})
        if self.s3_secret_name is not None:
            env += secret_env(self.s3_secret_name, S3_CREDENTIAL_KEYS)
        return env


def docker_config(server: str, username: str, password: str) -> str:
    """A .dockerconfigjson granting pulls from `server`'s host with these credentials."""
    host = server.split("/", 1)[0]
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"username": username, "password": password, "auth": auth}}})


def image_pull_secret(
    resource_name: str,
    namespace: pulumi.Input[str],
    object_labels: dict[str, str],
    registry: PushTarget | None,
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[str] | None:
    """The name of a dockerconfigjson Secret for `registry` in `namespace` (Secrets do not cross
    namespaces); None without a registry or when it takes no credentials."""
    if registry is None or registry.username is None or registry.password is None:
        return None
    config: pulumi.Output[str] = pulumi.Output.all(
        registry.server, registry.username, registry.password
    ).apply(lambda v: pulumi.Output.secret(docker_config(str(v[0]), str(v[1]), str(v[2]))))
    secret = k8s.core.v1.Secret(
        resource_name,
        metadata={"namespace": namespace, "labels": object_labels},
        type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": config},
        opts=opts,
    )
    return object_name(secret)


# With a WaitForFirstConsumer storage class (kind, most managed clusters) a claim binds only
# once a pod uses it, so the provider must not wait for Bound before the Deployment exists;
# the claim names are fixed for the same reason (no dependency edge from Deployment to claim).
_CLAIM_ANNOTATIONS = {"pulumi.com/skipAwait": "true"}


def protected(opts: pulumi.ResourceOptions, protect: bool) -> pulumi.ResourceOptions:
    """`opts` with `protect=True` for state worth keeping (prod): Pulumi then refuses to delete or
    replace the resource. False leaves `opts` alone, so a protected parent still protects it."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=True)) if protect else opts


def volume_claim(
    resource_name: str,
    claim_name: str,
    namespace: pulumi.Input[str],
    object_labels: dict[str, str],
    size: str,
    opts: pulumi.ResourceOptions,
    protect: bool = False,
) -> k8s.core.v1.PersistentVolumeClaim:
    """A single-node volume that outlives pod replacements (a database, registry blobs, a TSDB);
    `protect` keeps `pulumi destroy` and replacements from deleting it."""
    return k8s.core.v1.PersistentVolumeClaim(
        resource_name,
        metadata={
            "name": claim_name,
            "namespace": namespace,
            "labels": object_labels,
            "annotations": _CLAIM_ANNOTATIONS,
        },
        spec={"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        opts=protected(opts, protect),
    )


def _relative(path: Path) -> str:
    # Relative to the program's working directory, so that state and renders do not carry
    # one machine's absolute paths.
    return os.path.relpath(path, Path.cwd())


def image_reference(
    owner: pulumi.Resource,
    name: str,
    source: ImageSource,
    push: PushTarget | None,
    depends_on: list[pulumi.Resource] | None = None,
) -> tuple[pulumi.Output[str], docker.Image | None]:
    """The reference pods should run: `source.ref` as given, or the digest of a freshly pushed build."""
    if source.ref is not None:
        return pulumi.Output.from_input(source.ref), None
    if push is None:
        raise ValueError(f"{name}: building {source.dockerfile} needs a PushTarget (a registry to push to)")
    assert source.dockerfile is not None and source.repository is not None
    image = docker.Image(
        name,
        image_name=pulumi.Output.concat(push.server, "/", source.repository, ":", source.tag),
        build=docker.DockerBuildArgs(
            context=_relative(REPO_ROOT),
            dockerfile=_relative(REPO_ROOT / source.dockerfile),
            platform=source.platform,
            builder_version=docker.BuilderVersion.BUILDER_BUILD_KIT,
        ),
        registry=docker.RegistryArgs(server=push.server, username=push.username, password=push.password),
        skip_push=False,
        opts=pulumi.ResourceOptions(parent=owner, depends_on=depends_on or []),
    )
    # repo_digest is repository@sha256:...: unique per build, so a new build is a new rollout.
    return image.repo_digest, image
