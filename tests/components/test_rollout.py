"""Every Deployment's rollout is bounded, and `pulumi up` waits for it exactly as long as Kubernetes.

The Kubernetes provider does not stop at ProgressDeadlineExceeded (it logs it and waits for its
timeout), so each Deployment's customTimeouts follow its progressDeadlineSeconds
(components/rollout.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pulumi
import pytest

from components.common import ImageSource
from components.monitoring import MonitoringStack
from components.registry import BackendStore, ModelRegistry, ModelRegistryArgs, RegistryMode
from components.retrain_trigger import RetrainTrigger
from components.rollout import CONTROLLER_SLACK_SECONDS, Rollout, probe_budget_seconds
from infra.render import RenderResult
from tests.components.test_monitoring_component import ARGS as MONITORING_ARGS
from tests.components.test_monitoring_component import RETRAIN

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def _deployments(render: RenderResult) -> list[dict[str, Any]]:
    return [o for o in render.kubernetes_objects if o["kind"] == "Deployment"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_deployment_bounds_its_rollout_beyond_what_its_pods_need(
    stack: str, dev_render: RenderResult, prod_render: RenderResult
) -> None:
    deployments = _deployments(dev_render if stack == "dev" else prod_render)
    assert len(deployments) >= 4
    for deployment in deployments:
        spec, name = deployment["spec"], deployment["metadata"]["name"]
        containers = spec["template"]["spec"]["containers"]
        needed = max(probe_budget_seconds(c) for c in containers) + spec["minReadySeconds"]
        assert spec["minReadySeconds"] >= 1, name
        assert spec["progressDeadlineSeconds"] > needed, name
        assert spec["revisionHistoryLimit"] >= 1, name


def test_probe_budget() -> None:
    http = {"httpGet": {"path": "/", "port": "http"}}
    # Kubernetes' defaults: every 10 s, 3 failures.
    assert probe_budget_seconds({"livenessProbe": http, "readinessProbe": http}) == 30 + 10
    startup = {**http, "periodSeconds": 2, "failureThreshold": 60}
    late = {**http, "initialDelaySeconds": 30}
    # The startup probe guards the start when there is one; liveness waits for it.
    assert (
        probe_budget_seconds({"startupProbe": startup, "livenessProbe": late, "readinessProbe": http}) == 130
    )
    assert probe_budget_seconds({"livenessProbe": late, "readinessProbe": {**http, "periodSeconds": 5}}) == 65
    assert probe_budget_seconds({}) == 0


def test_timeout_covers_each_pod_using_up_the_deadline() -> None:
    one = Rollout(ready_within_seconds=125)
    assert one.spec() == {"minReadySeconds": 10, "progressDeadlineSeconds": 300, "revisionHistoryLimit": 5}
    assert one.timeout_seconds == 300 + CONTROLLER_SLACK_SECONDS
    assert replace(one, max_pods=4).timeout_seconds == 4 * 300 + CONTROLLER_SLACK_SECONDS
    options = one.options(pulumi.ResourceOptions(protect=True))
    assert options.protect is True
    assert options.custom_timeouts is not None
    assert (options.custom_timeouts.create, options.custom_timeouts.update) == ("330s", "330s")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"progress_deadline_seconds": 135}, "progress_deadline_seconds (135) must exceed the 135 s"),
        ({"min_ready_seconds": 0}, "min_ready_seconds must be >= 1, got 0"),
        ({"revision_history_limit": 0}, "revision_history_limit must be >= 1, got 0"),
        ({"max_pods": 0}, "max_pods must be >= 1, got 0"),
    ],
)
def test_invalid_rollouts_name_the_field(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError) as err:
        Rollout(ready_within_seconds=125, **fields)
    assert message in str(err.value)


def test_monitoring_and_trigger_deployments_wait_for_their_deadline(
    pulumi_mocks, unique, custom_timeouts
) -> None:
    name = unique("mon")
    pulumi_mocks.build(lambda: MonitoringStack(name, replace(MONITORING_ARGS, retrain=RETRAIN)))
    # Grafana's and Prometheus' startup probes allow 5 minutes: a 10-minute deadline, one pod.
    for app in ("prometheus", "alertmanager", "grafana"):
        spec = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-{app}").inputs["spec"]
        assert spec["progressDeadlineSeconds"] == 600
        assert custom_timeouts[(DEPLOYMENT, f"{name}-{app}")] == ("630s", "630s")
    assert custom_timeouts[(DEPLOYMENT, f"{name}-retrain-deployment")] == ("330s", "330s")
    trigger = unique("retrain")
    pulumi_mocks.build(lambda: RetrainTrigger(trigger, replace(RETRAIN, namespace="monitoring")))
    assert custom_timeouts[(DEPLOYMENT, f"{trigger}-deployment")] == ("330s", "330s")


@pytest.mark.parametrize(("backend", "replicas", "timeout"), [("sqlite", 1, "330s"), ("external", 2, "630s")])
def test_registry_deployments_wait_for_their_deadline(
    pulumi_mocks, unique, custom_timeouts, backend: str, replicas: int, timeout: str
) -> None:
    name = unique("reg")
    args = ModelRegistryArgs(
        stack="dev",
        namespace="ns",
        bucket_name="bucket-dev",
        create_bucket=False,
        mlflow_image=ImageSource(ref="ghcr.io/acme/mlops-mlflow@sha256:" + "a" * 64),
        backend=BackendStore(backend),
        database_url=pulumi.Output.secret("postgresql://u:p@db/mlflow") if backend == "external" else None,
        tracking_replicas=replicas,
        registry_mode=RegistryMode.IN_CLUSTER,
    )
    pulumi_mocks.build(lambda: ModelRegistry(name, args))
    # MLflow rolls one new pod at a time with an external database, all at once with SQLite.
    assert custom_timeouts[(DEPLOYMENT, f"{name}-mlflow")] == (timeout, timeout)
    assert custom_timeouts[(DEPLOYMENT, f"{name}-image-registry")] == ("330s", "330s")
    assert custom_timeouts[("kubernetes:core/v1:Service", f"{name}-mlflow")] == ("", "")
