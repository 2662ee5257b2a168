"""Protected state: `mlops:protect` gives exactly the stateful resources Pulumi's `protect` option.

Read from the render (`RenderedResource.protect`, the option as the engine receives it, parents'
inherited), for both stack files and for each component under mocks.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pulumi
import pytest
import yaml

from components.common import ImageSource
from components.monitoring import MonitoringStack, MonitoringStackArgs
from components.registry import BackendStore, ModelRegistry, ModelRegistryArgs, RegistryMode
from infra.render import RenderedResource, RenderResult, run_program

REPO = Path(__file__).resolve().parents[2]
BUCKET = "pulumi-python:dynamic:Resource"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
SECRET = "kubernetes:core/v1:Secret"
REGISTRY = "mlops:index:ModelRegistry"
MONITORING = "mlops:index:MonitoringStack"
DEV_REGISTRY = ModelRegistryArgs(
    stack="dev",
    namespace="ns-dev",
    bucket_name="bucket-dev",
    mlflow_image=ImageSource(ref="ghcr.io/acme/mlops-mlflow@sha256:" + "a" * 64),
    s3_endpoint_url="http://localhost:9000",
)
MONITORING_ARGS = MonitoringStackArgs(
    stack="prod", namespace="monitoring", serving_namespaces=("mlops-prod",), grafana_admin_password="pw"
)


def _protected(resources: list[RenderedResource]) -> set[tuple[str, str]]:
    return {(r.type, r.name) for r in resources if r.protect}


def test_prod_protects_exactly_its_state(prod_render: RenderResult) -> None:
    # Prod's state: the adopted bucket, the Secret that is all the stack holds of MLflow's
    # external database, and Prometheus' volume (no in-cluster image registry in prod).
    assert _protected(prod_render.resources) == {
        (BUCKET, "registry-bucket"),
        (SECRET, "registry-mlflow-database"),
        (PVC, "monitoring-prometheus-data"),
    }
    bucket = prod_render.find(BUCKET, "registry-bucket").inputs
    assert (bucket["encryption"], bucket["tls_only"], bucket["force_destroy"]) == ("AES256", True, False)


def test_dev_protects_nothing(dev_render: RenderResult) -> None:
    assert _protected(dev_render.resources) == set()
    assert {r.name for r in dev_render.resources if r.type == PVC} == {
        "registry-image-registry-data",
        "registry-mlflow-data",
        "monitoring-prometheus-data",
    }
    bucket = dev_render.find(BUCKET, "registry-bucket").inputs
    # Encrypted where the store can; not TLS-only, since dev reaches its store over http://.
    assert (bucket["encryption"], bucket["tls_only"]) == ("AES256", False)


def test_unprotected_prod_is_refused_by_the_policy_pack(tmp_path: Path) -> None:
    from policy.rules import check_resources, stack_pack_config

    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "infra").symlink_to(REPO / "infra")
    prod = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())
    prod["config"]["mlops:protect"] = False
    (root / "Pulumi.prod.yaml").write_text(yaml.safe_dump(prod))

    render = run_program("prod", root)
    assert _protected(render.resources) == set()
    violations = check_resources(render.policy_resources(), stack_pack_config("prod"))
    refused = {v.resource for v in violations if v.rule == "stateful-resources-protected"}
    assert refused == {"registry-bucket", "monitoring-prometheus-data"}


def test_registry_protects_bucket_and_volumes(pulumi_mocks, unique) -> None:
    name, plain = unique("reg"), unique("reg")
    pulumi_mocks.build(lambda: ModelRegistry(name, replace(DEV_REGISTRY, protect=True)))
    pulumi_mocks.build(lambda: ModelRegistry(plain, DEV_REGISTRY))
    assert _protected(pulumi_mocks.children_of(REGISTRY, name)) == {
        (BUCKET, f"{name}-bucket"),
        (PVC, f"{name}-image-registry-data"),
        (PVC, f"{name}-mlflow-data"),
    }
    assert _protected(pulumi_mocks.children_of(REGISTRY, plain)) == set()


def test_registry_protects_the_external_database_secret(pulumi_mocks, unique) -> None:
    name = unique("reg")
    args = replace(
        DEV_REGISTRY,
        create_bucket=False,
        backend=BackendStore.EXTERNAL,
        database_url=pulumi.Output.secret("postgresql://u:p@db/mlflow"),
        registry_mode=RegistryMode.EXTERNAL,
        registry_server="ghcr.io/acme",
        protect=True,
    )
    pulumi_mocks.build(lambda: ModelRegistry(name, args))
    assert _protected(pulumi_mocks.children_of(REGISTRY, name)) == {(SECRET, f"{name}-mlflow-database")}


def test_monitoring_protects_prometheus_volume_only(pulumi_mocks, unique) -> None:
    name, plain = unique("mon"), unique("mon")
    pulumi_mocks.build(lambda: MonitoringStack(name, replace(MONITORING_ARGS, protect=True)))
    pulumi_mocks.build(lambda: MonitoringStack(plain, MONITORING_ARGS))
    assert _protected(pulumi_mocks.children_of(MONITORING, name)) == {(PVC, f"{name}-prometheus-data")}
    assert _protected(pulumi_mocks.children_of(MONITORING, plain)) == set()


def test_a_protected_component_still_protects_every_child(pulumi_mocks, unique) -> None:
    # protect=False adds nothing, so it does not undo protection inherited from the parent.
    name = unique("reg")
    opts = pulumi.ResourceOptions(protect=True)
    pulumi_mocks.build(lambda: ModelRegistry(name, DEV_REGISTRY, opts))
    children = pulumi_mocks.children_of(REGISTRY, name)
    assert len(children) > 3 and all(c.protect for c in children)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"bucket_tls_only": True},
            "bucket_tls_only needs https:// S3 endpoints, got 'http://localhost:9000'",
        ),
        (
            {
                "bucket_tls_only": True,
                "s3_endpoint_url": None,
                "s3_cluster_endpoint_url": "http://minio:9000",
            },
            "got 'http://minio:9000'",
        ),
        (
            {"bucket_encryption": "aws:kms"},
            "bucket_encryption must be one of ['AES256', 'none'], got 'aws:kms'",
        ),
    ],
)
def test_bucket_settings_are_checked(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        replace(DEV_REGISTRY, **overrides)  # type: ignore[arg-type]
    assert message in str(err.value)
    replace(DEV_REGISTRY, bucket_tls_only=True, s3_endpoint_url="https://s3.example.internal")
