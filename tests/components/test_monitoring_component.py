"""MonitoringStack under Pulumi's mocks: the tree, its outputs, and args refused by name."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from components.alert_rules import AlertThresholds, rule_groups
from components.common import ImageSource, PushTarget
from components.monitoring import MonitoringMode, MonitoringStack, MonitoringStackArgs
from components.retrain_trigger import RetrainTriggerArgs

TOKEN = "mlops:index:MonitoringStack"
ARGS = MonitoringStackArgs(
    stack="test",
    namespace="monitoring",
    serving_namespaces=("mlops-test",),
    grafana_admin_password="pw",
    thresholds=AlertThresholds(drift_psi=0.3),
)
RETRAIN = RetrainTriggerArgs(
    image=ImageSource(ref="ghcr.io/acme/serve@sha256:" + "e" * 64),
    stack="test",
    repository="acme/mlops",
    github_token="ghp_x",
    webhook_token="w" * 32,
)


def test_bundled_tree_and_outputs(pulumi_mocks, unique) -> None:
    name = unique("mon")
    stack = pulumi_mocks.build(lambda: MonitoringStack(name, ARGS))
    assert stack.pulumi_resource_type == TOKEN
    children = pulumi_mocks.children_of(TOKEN, name)
    assert len(children) == 22
    assert all(c.name.startswith(f"{name}-") for c in children)
    assert {c.type for c in children} >= {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:core/v1:Namespace",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:rbac.authorization.k8s.io/v1:Role",
    }
    assert pulumi_mocks.value(stack.namespace) == "monitoring"
    assert pulumi_mocks.value(stack.prometheus_url) == "http://prometheus.monitoring.svc.cluster.local:9090"
    assert (
        pulumi_mocks.value(stack.alertmanager_url) == "http://alertmanager.monitoring.svc.cluster.local:9093"
    )
    assert pulumi_mocks.value(stack.grafana_url) == "http://grafana.monitoring.svc.cluster.local:3000"
    assert stack.retrain_url is None
    # The rules output is the file Prometheus loads, with the args' thresholds.
    rules = yaml.safe_load(pulumi_mocks.value(stack.rules))
    assert rules == {"groups": rule_groups(AlertThresholds(drift_psi=0.3), ["mlops-test"])}


def test_without_grafana_there_is_no_grafana(pulumi_mocks, unique) -> None:
    name = unique("mon")
    stack = pulumi_mocks.build(
        lambda: MonitoringStack(name, replace(ARGS, grafana=False, grafana_admin_password=None))
    )
    assert stack.grafana_url is None
    assert not [c for c in pulumi_mocks.children_of(TOKEN, name) if "grafana" in c.name]


def test_retrain_trigger_is_a_child_in_the_monitoring_namespace(pulumi_mocks, unique) -> None:
    name = unique("mon")
    stack = pulumi_mocks.build(lambda: MonitoringStack(name, replace(ARGS, retrain=RETRAIN)))
    (trigger,) = [c for c in pulumi_mocks.children_of(TOKEN, name) if c.type == "mlops:index:RetrainTrigger"]
    assert trigger.name == f"{name}-retrain"
    deployment = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-retrain-deployment").inputs
    assert deployment["metadata"]["namespace"] == "monitoring"
    assert pulumi_mocks.value(stack.retrain_url) == (
        "http://retrain-trigger.monitoring.svc.cluster.local:80/alertmanager"
    )
    assert "imagePullSecrets" not in deployment["spec"]["template"]["spec"]  # a public image


def test_retrain_trigger_pulls_with_a_secret_in_the_monitoring_namespace(pulumi_mocks, unique) -> None:
    name = unique("mon")
    registry = PushTarget(server="ghcr.io/acme", username="bot", password="registry-token")
    pulumi_mocks.build(
        lambda: MonitoringStack(name, replace(ARGS, retrain=replace(RETRAIN, push_target=registry)))
    )
    pull = pulumi_mocks.one("kubernetes:core/v1:Secret", f"{name}-retrain-pull-secret").inputs
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    assert pull["metadata"]["namespace"] == "monitoring"
    assert pull["stringData"] == {".dockerconfigjson": "[secret]"}
    pod = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-retrain-deployment").inputs["spec"][
        "template"
    ]["spec"]
    assert pod["imagePullSecrets"] == [{"name": f"{name}-retrain-pull-secret"}]


def test_operator_tree(pulumi_mocks, unique) -> None:
    name = unique("mon")
    args = replace(
        ARGS, mode=MonitoringMode.OPERATOR, grafana_admin_password=None, operator_labels={"r": "x"}
    )
    stack = pulumi_mocks.build(lambda: MonitoringStack(name, args))
    types = sorted(c.type for c in pulumi_mocks.children_of(TOKEN, name))
    assert types == [
        "kubernetes:core/v1:ConfigMap",
        "kubernetes:monitoring.coreos.com/v1:PodMonitor",
        "kubernetes:monitoring.coreos.com/v1:PrometheusRule",
    ]
    assert stack.prometheus_url is None and stack.alertmanager_url is None and stack.grafana_url is None
    assert yaml.safe_load(pulumi_mocks.value(stack.rules))["groups"] == rule_groups(
        AlertThresholds(drift_psi=0.3), ["mlops-test"]
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "sidecar"}, "mode must be one of ['bundled', 'operator'], got 'sidecar'"),
        ({"serving_namespaces": ()}, "serving_namespaces must name at least one namespace to scrape"),
        (
            {"grafana_admin_password": None},
            "grafana_admin_password is required with bundled Grafana (grafana=True)",
        ),
        (
            {"retrain": replace(RETRAIN, namespace="elsewhere")},
            "retrain.namespace and retrain.image_pull_secret_name must be unset: the trigger runs in "
            "the monitoring namespace 'monitoring', with a pull secret made there",
        ),
        (
            {"retrain": replace(RETRAIN, image_pull_secret_name="pull")},
            "retrain.namespace and retrain.image_pull_secret_name must be unset: the trigger runs in "
            "the monitoring namespace 'monitoring', with a pull secret made there",
        ),
    ],
)
def test_invalid_args_name_the_argument(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        replace(ARGS, **overrides)  # type: ignore[arg-type]
    assert str(info.value) == message
