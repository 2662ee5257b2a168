"""Both stacks with monitoring, through the real program under mocks: what is deployed, in both modes.

Each render runs infra/__main__.py on a copy of a stack file (bundled as shipped, operator mode,
retraining on, monitoring off), validates every object against the strict Kubernetes schemas
(the operator's custom resources by apiVersion and kind), runs the policy pack, and checks the
rendered Prometheus and Alertmanager configuration with promtool and amtool.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.alert_rules import AlertThresholds, rule_groups
from components.dashboard import build_dashboard
from infra import render as render_module
from infra.config import load_stack_file
from infra.render import RecordingMocks, RenderedResource, RenderResult, run_program
from policy.rules import check_resources, stack_pack_config
from tests.monitoring.conftest import Tools, run

REPO = Path(__file__).resolve().parents[2]
STACK_NS = {"dev": "mlops-dev", "prod": "mlops-prod"}
OPERATOR_KINDS = {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
RETRAIN = {
    "enabled": True,
    "repository": "acme/mlops",
    "dataset_prefix": "s3://datasets/breast-cancer/",
    "min_interval": "2h",
}


def _project(root: Path, stack: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A project folder running the repo's program with an edited copy of a stack file."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "infra").symlink_to(REPO / "infra")
    config = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    edit(config)
    (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return root


def _monitoring(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["mlops:monitoring"] = {**config.get("mlops:monitoring", {}), **fields}

    return edit


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], RenderResult]:
    """(stack, variant) -> render; variants: shipped (bundled), operator, retrain, off."""
    variants = {
        "shipped": lambda c: None,
        "operator": _monitoring(mode="operator", operator_labels={"release": "kube-prometheus-stack"}),
        "retrain": _monitoring(retrain=RETRAIN),
        "operator-retrain": _monitoring(mode="operator", retrain=RETRAIN),
        "off": _monitoring(enabled=False),
    }
    out = {}
    for stack in ("dev", "prod"):
        for variant, edit in variants.items():
            root = tmp_path_factory.mktemp(f"{stack}-{variant}") / "project"
            out[(stack, variant)] = run_program(stack, _project(root, stack, edit))
    return out


def _children(
    render: RenderResult, parent: str = "mlops:index:MonitoringStack::monitoring"
) -> list[RenderedResource]:
    return [r for r in render.resources if r.parent == parent]


def _kinds(resources: list[RenderedResource]) -> list[tuple[str, str]]:
    return sorted((r.type, r.name) for r in resources)


def _name(render: RenderResult, type_: str, name: str) -> str:
    """The object's Kubernetes name (the provider's, here the logical name, when none is set)."""
    return str(render.find(type_, name).inputs["metadata"].get("name", name))


def _configmap(render: RenderResult, name: str) -> dict[str, str]:
    return dict(render.find("kubernetes:core/v1:ConfigMap", name).inputs["data"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_bundled_mode_deploys_prometheus_alertmanager_and_grafana(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "shipped")]
    component = render.find("mlops:index:MonitoringStack", "monitoring")
    assert component.parent == f"pulumi:pulumi:Stack::mlops-{stack}"
    assert _kinds(_children(render)) == sorted(
        [
            ("kubernetes:core/v1:Namespace", "monitoring-namespace"),
            ("kubernetes:core/v1:ServiceAccount", "monitoring-prometheus-account"),
            ("kubernetes:rbac.authorization.k8s.io/v1:Role", "monitoring-prometheus-discovery-0"),
            (
                "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
                "monitoring-prometheus-discovery-binding-0",
            ),
            ("kubernetes:core/v1:ConfigMap", "monitoring-prometheus-config"),
            ("kubernetes:core/v1:PersistentVolumeClaim", "monitoring-prometheus-data"),
            ("kubernetes:apps/v1:Deployment", "monitoring-prometheus"),
            ("kubernetes:core/v1:Service", "monitoring-prometheus-service"),
            ("kubernetes:core/v1:ConfigMap", "monitoring-alertmanager-config"),
            ("kubernetes:apps/v1:Deployment", "monitoring-alertmanager"),
            ("kubernetes:core/v1:Service", "monitoring-alertmanager-service"),
            ("kubernetes:core/v1:Secret", "monitoring-grafana-admin"),
            ("kubernetes:core/v1:ConfigMap", "monitoring-grafana-datasources"),
            ("kubernetes:core/v1:ConfigMap", "monitoring-grafana-dashboard-provider"),
            ("kubernetes:core/v1:ConfigMap", "monitoring-grafana-dashboards"),
            ("kubernetes:apps/v1:Deployment", "monitoring-grafana"),
            ("kubernetes:core/v1:Service", "monitoring-grafana-service"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "monitoring-prometheus-network-policy"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "monitoring-alertmanager-network-policy"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "monitoring-grafana-network-policy"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "monitoring-dns"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "monitoring-default-deny"),
        ]
    )
    namespace = render.find("kubernetes:core/v1:Namespace", "monitoring-namespace").inputs["metadata"]
    assert namespace["name"] == "monitoring"
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert render.outputs["monitoring"] == {
        "namespace": "monitoring",
        "prometheus": "http://prometheus.monitoring.svc.cluster.local:9090",
        "grafana": "http://grafana.monitoring.svc.cluster.local:3000",
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_prometheus_runs_hardened_with_its_settings(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "shipped")]
    settings = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]["mlops:monitoring"]
    deployment = render.find("kubernetes:apps/v1:Deployment", "monitoring-prometheus").inputs
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer of the volume
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert f"--storage.tsdb.retention.time={settings['retention']}" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    claim = render.find("kubernetes:core/v1:PersistentVolumeClaim", "monitoring-prometheus-data").inputs
    assert claim["spec"]["resources"]["requests"]["storage"] == settings["storage_size"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in pod[
        "volumes"
    ]
    # Each workload runs its own image of the stack's settings (prod: by digest).
    expected = load_stack_file(stack, REPO, assume_secrets=True).images
    images = {
        d: render.find("kubernetes:apps/v1:Deployment", f"monitoring-{d}").inputs["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        for d in ("prometheus", "alertmanager", "grafana")
    }
    assert images == {d: getattr(expected, d) for d in images}
    assert len(set(images.values())) == 3
    if stack == "prod":
        assert all("@sha256:" in ref for ref in images.values()), images


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_prometheus_may_only_read_pods_of_the_stack(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "shipped")]
    types = {r.type for r in render.resources}
    assert not {t for t in types if "ClusterRole" in t}  # nothing cluster-wide
    role_type = "kubernetes:rbac.authorization.k8s.io/v1:Role"
    role = render.find(role_type, "monitoring-prometheus-discovery-0").inputs
    assert role["metadata"]["namespace"] == STACK_NS[stack]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = render.find(
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "monitoring-prometheus-discovery-binding-0"
    ).inputs
    account = _name(render, "kubernetes:core/v1:ServiceAccount", "monitoring-prometheus-account")
    assert binding["roleRef"]["name"] == _name(render, role_type, "monitoring-prometheus-discovery-0")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "monitoring"}]
    # The other workloads hold no API token at all.
    for app in ("alertmanager", "grafana"):
        pod = render.find("kubernetes:apps/v1:Deployment", f"monitoring-{app}").inputs["spec"]["template"][
            "spec"
        ]
        assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_network_policies_admit_only_the_paths_monitoring_uses(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "shipped")]

    def policy(app: str) -> dict[str, Any]:
        spec = render.find(
            "kubernetes:networking.k8s.io/v1:NetworkPolicy", f"monitoring-{app}-network-policy"
        ).inputs
        assert spec["spec"]["policyTypes"] == ["Ingress", "Egress"]
        return dict(spec["spec"])

    scrape = policy("prometheus")["egress"][0]
    assert scrape["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert scrape["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": STACK_NS[stack]}},
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "serving",
                    "app.kubernetes.io/part-of": "mlops",
                }
            },
        }
    ]
    (ingress,) = policy("alertmanager")["ingress"]
    assert ingress["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "prometheus",
                    "app.kubernetes.io/component": "monitoring",
                }
            }
        }
    ]
    grafana_out = policy("grafana")["egress"]
    assert grafana_out[0]["ports"] == [{"port": 9090, "protocol": "TCP"}]
    # ... and the model servers admit the monitoring namespace (one source: mlops:monitoring.namespace).
    serving = render.find("kubernetes:networking.k8s.io/v1:NetworkPolicy", "serving-network-policy").inputs
    sources = [source for rule in serving["spec"]["ingress"] for source in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources


def test_the_monitoring_namespace_setting_moves_everything(tmp_path: Path) -> None:
    render = run_program("dev", _project(tmp_path / "p", "dev", _monitoring(namespace="observability")))
    for resource in _children(render):
        meta = resource.inputs["metadata"]
        if resource.type == "kubernetes:core/v1:Namespace":
            assert meta["name"] == "observability"
        elif (
            resource.type != "kubernetes:rbac.authorization.k8s.io/v1:Role"
            and "discovery" not in resource.name
        ):
            assert meta["namespace"] == "observability", resource.name
    serving = render.find("kubernetes:networking.k8s.io/v1:NetworkPolicy", "serving-network-policy").inputs
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}} in [
        source for rule in serving["spec"]["ingress"] for source in rule["from"]
    ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_rendered_prometheus_config_passes_promtool_with_its_rules(
    stack: str, renders: dict[tuple[str, str], RenderResult], tools: Tools, tmp_path: Path
) -> None:
    data = _configmap(renders[(stack, "shipped")], "monitoring-prometheus-config")
    rules = yaml.safe_load(data["mlops-rules.yaml"])
    assert rules == {"groups": rule_groups(AlertThresholds(), [STACK_NS[stack]])}
    (tmp_path / "mlops-rules.yaml").write_text(data["mlops-rules.yaml"])
    # The pod mounts the ConfigMap at /etc/prometheus; here it is tmp_path.
    (tmp_path / "prometheus.yml").write_text(
        data["prometheus.yml"].replace("/etc/prometheus/", f"{tmp_path}/")
    )
    result = run(tools.upstream_promtool, "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.output
    assert "SUCCESS: 6 rules found" in result.output
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["scrape_configs"][0]["kubernetes_sd_configs"][0]["namespaces"] == {
        "names": [STACK_NS[stack]]
    }
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": ["alertmanager.monitoring.svc:9093"]}
    ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_rendered_alertmanager_config_passes_amtool(
    stack: str, renders: dict[tuple[str, str], RenderResult], tools: Tools, tmp_path: Path
) -> None:
    for variant in ("shipped", "retrain"):
        text = _configmap(renders[(stack, variant)], "monitoring-alertmanager-config")["alertmanager.yml"]
        path = tmp_path / f"{variant}.yml"
        path.write_text(text.replace("/etc/alertmanager/secrets/", f"{tmp_path}/"))
        (tmp_path / "token").write_text("x" * 32)
        result = run(tools.amtool, "check-config", path)
        assert result.returncode == 0, result.output
        assert f"{1 if variant == 'shipped' else 2} receivers" in result.output


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_grafana_gets_the_dashboard_and_its_password_from_secrets(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "shipped")]
    board = _configmap(render, "monitoring-grafana-dashboards")["mlops-model-serving.json"]
    expected = build_dashboard([STACK_NS[stack]], AlertThresholds(), f"MLOps model serving ({stack})")
    assert yaml.safe_load(board) == expected
    datasource = yaml.safe_load(_configmap(render, "monitoring-grafana-datasources")["prometheus.yaml"])
    assert datasource["datasources"][0]["url"] == "http://prometheus.monitoring.svc.cluster.local:9090"
    secret = render.find("kubernetes:core/v1:Secret", "monitoring-grafana-admin").inputs
    assert secret["stringData"] == {"admin-password": "[secret]"}
    (container,) = render.find("kubernetes:apps/v1:Deployment", "monitoring-grafana").inputs["spec"][
        "template"
    ]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "monitoring-grafana-admin", "key": "admin-password"}
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_retraining_wires_the_trigger_into_alertmanager(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "retrain")]
    trigger = render.find("mlops:index:RetrainTrigger", "monitoring-retrain")
    assert trigger.parent == "mlops:index:MonitoringStack::monitoring"
    service = render.find("kubernetes:core/v1:Service", "monitoring-retrain-service").inputs
    assert service["metadata"]["namespace"] == "monitoring"
    config = yaml.safe_load(_configmap(render, "monitoring-alertmanager-config")["alertmanager.yml"])
    (hook,) = {r["name"]: r for r in config["receivers"]}["retrain"]["webhook_configs"]
    assert hook["url"] == f"http://{service['metadata']['name']}.monitoring.svc.cluster.local:80/alertmanager"
    token_file = hook["http_config"]["authorization"]["credentials_file"]
    # Alertmanager mounts the webhook token's Secret (and only that one) where the file is read.
    pod = render.find("kubernetes:apps/v1:Deployment", "monitoring-alertmanager").inputs["spec"]["template"][
        "spec"
    ]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-token")
    assert volume["secret"]["secretName"] == _name(
        render, "kubernetes:core/v1:Secret", "monitoring-retrain-webhook-token"
    )
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "webhook-token")
    assert token_file == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    env = render.find("kubernetes:apps/v1:Deployment", "monitoring-retrain-deployment").inputs["spec"][
        "template"
    ]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert values["MLOPS_RETRAIN_REPOSITORY"] == "acme/mlops"
    assert values["MLOPS_RETRAIN_MIN_INTERVAL_SECONDS"] == "7200"
    assert values["MLOPS_RETRAIN_STACK"] == stack
    assert render.outputs["monitoring"]["namespace"] == "monitoring"
    # The trigger runs the model servers' image: in dev, one build serves both.
    assert _image(render, "monitoring-retrain-deployment") == _image(render, "serving-deployment")
    builds = sorted(r.name for r in render.resources if r.type == "docker:index/image:Image")
    assert builds == (["registry-mlflow-image", "serving-image", "training-image"] if stack == "dev" else [])


def _image(render: RenderResult, deployment: str) -> str:
    spec = render.find("kubernetes:apps/v1:Deployment", deployment).inputs["spec"]
    return str(spec["template"]["spec"]["containers"][0]["image"])


@pytest.mark.parametrize("variant", ["retrain", "operator-retrain"])
def test_the_webhook_token_reaches_only_its_secrets(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered with a real token: it is in the token Secrets, in no ConfigMap or Deployment."""
    token = "webhook-token-0123456789abcdef"
    placeholders = render_module.secret_placeholders
    monkeypatch.setattr(
        render_module,
        "secret_placeholders",
        lambda raw, assume_secrets: {**placeholders(raw, assume_secrets), "retrain_webhook_token": token},
    )
    states: list[tuple[str, str, str]] = []  # (type, name, plain state as JSON)
    new_resource = RecordingMocks.new_resource

    def record(self: RecordingMocks, args: Any) -> tuple[str | None, dict[str, Any]]:
        resource_id, state = new_resource(self, args)
        states.append((args.typ, args.name, json.dumps(state)))
        return resource_id, state

    monkeypatch.setattr(RecordingMocks, "new_resource", record)
    edit = _monitoring(retrain=RETRAIN, **({"mode": "operator"} if variant.startswith("operator") else {}))
    run_program("dev", _project(tmp_path / "p", "dev", edit))
    holders = [(typ, name) for typ, name, state in states if token in state]
    # The trigger's Secret; in operator mode also the copy beside the AlertmanagerConfig (the
    # servers' namespace), of the same logical name under the MonitoringStack.
    copies = 2 if variant == "operator-retrain" else 1
    assert holders == [("kubernetes:core/v1:Secret", "monitoring-retrain-webhook-token")] * copies
    assert not [n for t, n, state in states if t.endswith(("ConfigMap", "Deployment")) and token in state]


def test_prod_retrain_trigger_pulls_from_the_private_registry(
    renders: dict[tuple[str, str], RenderResult],
) -> None:
    render = renders[("prod", "retrain")]
    pull = render.find("kubernetes:core/v1:Secret", "monitoring-retrain-pull-secret").inputs
    assert pull["type"] == "kubernetes.io/dockerconfigjson" and pull["metadata"]["namespace"] == "monitoring"
    assert pull["stringData"] == {".dockerconfigjson": "[secret]"}
    pod = render.find("kubernetes:apps/v1:Deployment", "monitoring-retrain-deployment").inputs["spec"][
        "template"
    ]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "monitoring-retrain-pull-secret"}]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_operator_mode_hands_the_same_rules_to_the_operator(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "operator")]
    children = _children(render)
    assert {r.type for r in children} == {
        "kubernetes:monitoring.coreos.com/v1:PodMonitor",
        "kubernetes:monitoring.coreos.com/v1:PrometheusRule",
        "kubernetes:core/v1:ConfigMap",
    }
    rule = render.find("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "monitoring-rules").inputs
    bundled = _configmap(renders[(stack, "shipped")], "monitoring-prometheus-config")["mlops-rules.yaml"]
    assert rule["spec"]["groups"] == yaml.safe_load(bundled)["groups"]
    assert rule["metadata"]["namespace"] == STACK_NS[stack]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    monitor = render.find("kubernetes:monitoring.coreos.com/v1:PodMonitor", "monitoring-pod-monitor-0").inputs
    assert monitor["metadata"]["namespace"] == STACK_NS[stack]
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/component": "serving", "app.kubernetes.io/part-of": "mlops"}
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "mlops-serving"} in endpoint["relabelings"]
    dashboards = render.find("kubernetes:core/v1:ConfigMap", "monitoring-grafana-dashboards").inputs
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["namespace"] == "monitoring"
    # No namespace, Prometheus, Alertmanager or Grafana of our own: the operator runs them.
    assert not [
        r for r in children if r.type in ("kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Namespace")
    ]
    assert render.outputs["monitoring"] == {"namespace": "monitoring"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_operator_mode_routes_retraining_with_an_alertmanager_config(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "operator-retrain")]
    route = render.find(
        "kubernetes:monitoring.coreos.com/v1alpha1:AlertmanagerConfig", "monitoring-retrain-route"
    ).inputs
    # The trigger (a child component) has a Secret of the same name in Alertmanager's namespace,
    # and the render's order between the two varies: take the monitoring stack's own copy.
    (token,) = [
        r.inputs
        for r in _children(render)
        if r.type == "kubernetes:core/v1:Secret" and r.name == "monitoring-retrain-webhook-token"
    ]
    # Beside the servers: the operator only routes alerts labelled with the config's namespace.
    assert route["metadata"]["namespace"] == token["metadata"]["namespace"] == STACK_NS[stack]
    assert token["stringData"] == {"token": "[secret]"}
    (receiver,) = route["spec"]["receivers"]
    (hook,) = receiver["webhookConfigs"]
    assert hook["httpConfig"]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "monitoring-retrain-webhook-token", "key": "token"},
    }
    assert hook["url"].endswith(".monitoring.svc.cluster.local:80/alertmanager")
    assert route["spec"]["route"]["matchers"] == [
        {"name": "alertname", "matchType": "=~", "value": "MLOpsModelDrift"}
    ]
    trigger = render.find("kubernetes:apps/v1:Deployment", "monitoring-retrain-deployment").inputs
    assert trigger["metadata"]["namespace"] == "monitoring"  # beside the operator's Alertmanager


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_monitoring_off_deploys_nothing_of_it(
    stack: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, "off")]
    assert not [r for r in render.resources if r.name.startswith("monitoring")]
    assert "monitoring" not in render.outputs


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("variant", ["shipped", "operator", "retrain", "operator-retrain"])
def test_every_object_validates_and_passes_the_policy_pack(
    stack: str, variant: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    render = renders[(stack, variant)]
    version = kubernetes_validate.latest_version()
    custom = []
    for obj in render.kubernetes_objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            custom.append((obj["apiVersion"], obj["kind"]))
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "mlops" and labels["mlops.dev/stack"] == stack
    if variant.startswith("operator"):
        expected = OPERATOR_KINDS | (
            {("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig")} if "retrain" in variant else set()
        )
        assert set(custom) == expected
    else:
        assert custom == []
    violations = check_resources(render.policy_resources(), stack_pack_config(stack))
    assert violations == [], "\n".join(v.message for v in violations)


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda pod: pod["containers"][0].update(image="docker.io/prom/prometheus:latest"), "image-pinned"),
        (lambda pod: pod["containers"][0]["resources"].pop("limits"), "container-resources-and-probes"),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(privileged=True),
            "container-security-context",
        ),
        (lambda pod: pod.update(hostNetwork=True), "container-security-context"),
        (
            lambda pod: pod["volumes"].append({"name": "node", "hostPath": {"path": "/"}}),
            "container-security-context",
        ),
    ],
)
def test_the_policy_pack_fires_on_a_violating_monitoring_object(
    change: Callable[[dict[str, Any]], None], rule: str, renders: dict[tuple[str, str], RenderResult]
) -> None:
    resources = copy.deepcopy(renders[("prod", "shipped")].policy_resources())
    target = next(r for r in resources if r["name"] == "monitoring-prometheus")
    change(target["props"]["spec"]["template"]["spec"])
    violations = check_resources(resources, stack_pack_config("prod"))
    assert [(v.rule, v.resource) for v in violations] == [(rule, "monitoring-prometheus")], violations
