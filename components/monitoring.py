"""MonitoringStack: Prometheus scraping the model servers, alert rules, Alertmanager and Grafana.

Two modes (`MonitoringMode`):

* bundled: the stack runs them in their own namespace (restricted Pod Security), each with a
  least-privilege identity, NetworkPolicies and the configuration built in
  components/monitoring_config.py, components/alert_rules.py and components/dashboard.py;
* operator: a Prometheus Operator already runs Prometheus; the stack adds a PodMonitor
  selecting the model servers and a PrometheusRule with the very same rule groups (and, with
  Grafana on, the dashboard as a ConfigMap for Grafana's dashboard sidecar).

With retraining on, the retrain trigger (components/retrain_trigger.py) runs in the monitoring
namespace and drift alerts reach it through Alertmanager's webhook (`RetrainWebhook`), with the
trigger's bearer token mounted from a Secret as Alertmanager's credentials file.
"""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.alert_rules import DRIFT_ALERT, SERVING_JOB, AlertThresholds, rule_groups
from components.common import (
    container_security_context,
    image_pull_secret,
    labels,
    object_name,
    pod_security_context,
    resources,
    service_url,
    volume_claim,
)
from components.dashboard import build_dashboard, dashboard_json
from components.monitoring_config import (
    GROUP_BY,
    RETRAIN_RECEIVER,
    SERVING_POD_SELECTOR,
    RetrainRoute,
    alertmanager_config,
    grafana_dashboard_provider,
    grafana_datasources,
    prometheus_config,
    to_yaml,
)
from components.network import default_deny, dns_policy
from components.retrain_trigger import APP as RETRAIN_APP
from components.retrain_trigger import PORT as RETRAIN_PORT
from components.retrain_trigger import RetrainTrigger, RetrainTriggerArgs
from components.rollout import Rollout, probe_budget_seconds
from components.serving import PORT as SERVING_PORT

__all__ = [
    "MonitoringImages",
    "MonitoringMode",
    "MonitoringStack",
    "MonitoringStackArgs",
    "RetrainWebhook",
]

PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
GRAFANA_PORT = 3000
RULES_FILE = "mlops-rules.yaml"
DASHBOARD_FILE = "mlops-model-serving.json"
DASHBOARD_DIR = "/var/lib/grafana-dashboards"
TOKEN_DIR = "/etc/alertmanager/secrets"
PROMETHEUS_DATA = "prometheus-data"
# Every monitoring workload runs as the stacks' workload user (10001, pod_security_context's
# default): volumes provisioned for the stack's workloads are theirs too. Their images need no
# user of their own (Prometheus and Alertmanager run as nobody, Grafana as 472, and every path
# Grafana writes is a scratch volume).
# (cpu request, memory request, cpu limit, memory limit) per workload.
FOOTPRINT = {
    "prometheus": ("200m", "512Mi", "1", "2Gi"),
    "alertmanager": ("50m", "64Mi", "200m", "256Mi"),
    "grafana": ("100m", "128Mi", "500m", "512Mi"),
}
_RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class MonitoringMode(StrEnum):
    """Who runs Prometheus and Alertmanager."""

    BUNDLED = "bundled"
    """This stack, in `namespace` (created with the restricted Pod Security labels)."""
    OPERATOR = "operator"
    """A Prometheus Operator (kube-prometheus-stack); the stack adds a PodMonitor and a PrometheusRule."""


@dataclass(frozen=True)
class MonitoringImages:
    """Image references, used as given (prod: pinned by digest; the policy pack checks)."""

    prometheus: str = "docker.io/prom/prometheus:v2.53.0"
    alertmanager: str = "docker.io/prom/alertmanager:v0.27.0"
    grafana: str = "docker.io/grafana/grafana:11.6.0"


@dataclass(frozen=True)
class RetrainWebhook:
    """Where Alertmanager posts the retrain alerts, and the Secret holding its bearer token."""

    url: pulumi.Input[str]
    """The retrain trigger's webhook URL (RetrainTrigger.url)."""
    token_secret_name: pulumi.Input[str]
    """A Secret in the monitoring namespace holding the token Alertmanager sends as Bearer."""
    token_key: str
    """The Secret's key holding the token (mounted as Alertmanager's credentials_file)."""
    alert_names: tuple[str, ...] = (DRIFT_ALERT,)
    """Alerts routed to the trigger (they also reach the default receiver)."""


@dataclass(frozen=True)
class MonitoringStackArgs:
    stack: str
    """Stack name, written into the `mlops.dev/stack` label."""
    namespace: str
    """The monitoring namespace: created here in bundled mode; the operator's in operator mode.
    The serving NetworkPolicy admits scrapes from its pods."""
    serving_namespaces: tuple[pulumi.Input[str], ...]
    """Namespaces of the model servers to scrape (from the Namespace objects, so they exist first)."""
    mode: MonitoringMode = MonitoringMode.BUNDLED
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    """When the alerts fire."""
    scrape_interval: str = "15s"
    retention: str = "15d"
    """Prometheus --storage.tsdb.retention.time."""
    storage_size: str = "10Gi"
    """Prometheus' PersistentVolumeClaim."""
    protect: bool = False
    """Give Prometheus' PersistentVolumeClaim (its metrics history) `protect` (prod): Pulumi then
    refuses to delete or replace it."""
    images: MonitoringImages = field(default_factory=MonitoringImages)
    grafana: bool = True
    """Bundled: run Grafana with the dashboard; operator: publish the dashboard ConfigMap."""
    grafana_admin_password: pulumi.Input[str] | None = None
    """Secret; required for bundled Grafana."""
    retrain: RetrainTriggerArgs | None = None
    """Run the retrain trigger in the monitoring namespace and route its alerts there: bundled
    Alertmanager's webhook receiver, or in operator mode an AlertmanagerConfig for the operator's
    Alertmanager. Leave its `namespace` and `image_pull_secret_name` unset: the stack fills them
    (a pull secret in its namespace from `push_target`'s credentials)."""
    operator_labels: Mapping[str, str] = field(default_factory=dict)
    """Operator mode: extra labels on the PodMonitor, PrometheusRule and dashboard ConfigMap that
    the operator's selectors match (kube-prometheus-stack: {release: <helm release>})."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, MonitoringMode):
            raise ValueError(f"mode must be one of {[m.value for m in MonitoringMode]}, got {self.mode!r}")
        if not self.serving_namespaces:
            raise ValueError("serving_namespaces must name at least one namespace to scrape")
        if self.mode is MonitoringMode.BUNDLED and self.grafana and self.grafana_admin_password is None:
            raise ValueError("grafana_admin_password is required with bundled Grafana (grafana=True)")
        if self.retrain is not None and (
            self.retrain.namespace is not None or self.retrain.image_pull_secret_name is not None
        ):
            raise ValueError(
                "retrain.namespace and retrain.image_pull_secret_name must be unset: the trigger runs "
                f"in the monitoring namespace {self.namespace!r}, with a pull secret made there"
            )


def _namespaces(args: MonitoringStackArgs) -> pulumi.Output[list[str]]:
    return pulumi.Output.all(*args.serving_namespaces).apply(lambda names: [str(n) for n in names])


def _rules_yaml(args: MonitoringStackArgs) -> pulumi.Output[str]:
    return _namespaces(args).apply(lambda ns: to_yaml({"groups": rule_groups(args.thresholds, ns)}))


def _container(
    name: str, image: str, port: int, health: tuple[str, str | None], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """A container with the shared hardening, its footprint and probes: HTTP (ready, live), or a
    TCP liveness check where the image has one health endpoint (liveness must differ from
    readiness, or a slow dependency restarts a pod that is only busy)."""
    ready, live = health
    alive = {"httpGet": {"path": live, "port": "http"}} if live else {"tcpSocket": {"port": "http"}}
    return {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": ready, "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
        },
        "livenessProbe": {
            **alive,
            "periodSeconds": 15,
            "timeoutSeconds": 3,
            "failureThreshold": 4,
        },
        # Liveness starts once this passed: Grafana migrates its database first (up to 5 minutes).
        "startupProbe": {
            "httpGet": {"path": live or ready, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "resources": resources(*FOOTPRINT[name]),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }


class MonitoringStack(pulumi.ComponentResource):
    """Scrapes the model servers, evaluates the alert rules and shows the serving dashboard."""

    namespace: pulumi.Output[str]
    """The monitoring namespace (from the Namespace object in bundled mode)."""
    rules: pulumi.Output[str]
    """The alert rules file (YAML `groups:`), as loaded by Prometheus or the operator."""
    prometheus_url: pulumi.Output[str] | None
    """In-cluster URL of the bundled Prometheus; None in operator mode."""
    alertmanager_url: pulumi.Output[str] | None
    """In-cluster URL of the bundled Alertmanager; None in operator mode."""
    grafana_url: pulumi.Output[str] | None
    """In-cluster URL of the bundled Grafana; None without it."""
    retrain_url: pulumi.Output[str] | None
    """The retrain trigger's webhook URL; None without retraining."""

    def __init__(
        self, name: str, args: MonitoringStackArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:MonitoringStack", name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        self.prometheus_url = self.alertmanager_url = self.grafana_url = self.retrain_url = None
        bundled = args.mode is MonitoringMode.BUNDLED
        # Operator mode: the operator's namespace exists already.
        self.namespace = self._namespace() if bundled else pulumi.Output.from_input(args.namespace)
        webhook = self._retrain_trigger(args.retrain) if args.retrain is not None else None
        self.rules = self._bundled(webhook) if bundled else self._operator(webhook)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "rules": self.rules,
                "prometheus_url": self.prometheus_url,
                "alertmanager_url": self.alertmanager_url,
                "grafana_url": self.grafana_url,
                "retrain_url": self.retrain_url,
            }
        )

    def _labels(self, app: str) -> dict[str, str]:
        return labels(app, "monitoring", self._args.stack)

    def _namespace(self) -> pulumi.Output[str]:
        namespace = k8s.core.v1.Namespace(
            f"{self._name}-namespace",
            metadata={"name": self._args.namespace, "labels": {**self._labels("monitoring"), **_RESTRICTED}},
            opts=self._child,
        )
        return object_name(namespace)

    def _retrain_trigger(self, retrain: RetrainTriggerArgs) -> RetrainWebhook:
        """The trigger next to Alertmanager (its NetworkPolicy admits only Alertmanager's pods)."""
        pull_secret = image_pull_secret(
            f"{self._name}-retrain-pull-secret",
            self.namespace,
            self._labels("retrain-trigger"),
            retrain.push_target,
            self._child,
        )
        trigger_args = replace(retrain, namespace=self.namespace, image_pull_secret_name=pull_secret)
        trigger = RetrainTrigger(f"{self._name}-retrain", trigger_args, opts=self._child)
        self.retrain_url = trigger.url
        return RetrainWebhook(
            url=trigger.url,
            token_secret_name=trigger.webhook_token_secret_name,
            token_key=trigger.webhook_token_secret_key,
            alert_names=retrain.alert_names,
        )

    # ------------------------------------------------------------------ bundled mode --

    def _bundled(self, webhook: RetrainWebhook | None) -> pulumi.Output[str]:
        alertmanager = self._alertmanager(webhook)
        self.alertmanager_url = service_url(alertmanager)
        prometheus, rules = self._prometheus(alertmanager)
        self.prometheus_url = service_url(prometheus)
        if self._args.grafana:
            self.grafana_url = service_url(self._grafana(self.prometheus_url))
        self._network_policies()
        return rules

    def _service(self, app: str, port: int) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            f"{self._name}-{app}-service",
            metadata={"name": app, "namespace": self.namespace, "labels": self._labels(app)},
            spec={
                "type": "ClusterIP",
                "selector": _selector(app),
                "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=self._child,
        )

    def _deployment(self, app: str, pod: dict[str, Any], strategy: str = "RollingUpdate") -> None:
        lbl = self._labels(app)
        # One replica: a rollout brings up one pod. Grafana's and Prometheus' startup probes allow
        # 5 minutes (a database migration, a TSDB replay): the deadline is longer.
        rollout = Rollout(
            ready_within_seconds=max(probe_budget_seconds(c) for c in pod["containers"]),
            progress_deadline_seconds=600,
            revision_history_limit=3,
        )
        k8s.apps.v1.Deployment(
            f"{self._name}-{app}",
            metadata={"namespace": self.namespace, "labels": lbl},
            spec={
                "replicas": 1,
                **rollout.spec(),
                "strategy": {"type": strategy},
                "selector": {"matchLabels": _selector(app)},
                "template": {"metadata": {"labels": lbl}, "spec": pod},
            },
            opts=rollout.options(self._child),
        )

    def _config_map(
        self, role: str, app: str, data: Mapping[str, pulumi.Input[str]]
    ) -> k8s.core.v1.ConfigMap:
        # Named by the provider: a changed configuration is a new ConfigMap, so the pods roll.
        return k8s.core.v1.ConfigMap(
            f"{self._name}-{role}",
            metadata={"namespace": self.namespace, "labels": self._labels(app)},
            data=dict(data),
            opts=self._child,
        )

    def _prometheus(
        self, alertmanager: k8s.core.v1.Service
    ) -> tuple[k8s.core.v1.Service, pulumi.Output[str]]:
        account = self._prometheus_account()
        files = self._prometheus_files(alertmanager)
        rules = files.data.apply(lambda data: str(data[RULES_FILE]))
        volume_claim(
            f"{self._name}-prometheus-data",
            PROMETHEUS_DATA,
            self.namespace,
            self._labels("prometheus"),
            self._args.storage_size,
            self._child,
            protect=self._args.protect,
        )
        # One pod writes the volume (ReadWriteOnce, and the TSDB takes a lock): Recreate.
        self._deployment("prometheus", self._prometheus_pod(account, files), strategy="Recreate")
        return self._service("prometheus", PROMETHEUS_PORT), rules

    def _prometheus_account(self) -> k8s.core.v1.ServiceAccount:
        """Prometheus' identity, allowed to discover pods in every scraped namespace."""
        account = k8s.core.v1.ServiceAccount(
            f"{self._name}-prometheus-account",
            metadata={"namespace": self.namespace, "labels": self._labels("prometheus")},
            opts=self._child,
        )
        for index, serving_ns in enumerate(self._args.serving_namespaces):
            self._discovery_access(index, serving_ns, object_name(account))
        return account

    def _prometheus_files(self, alertmanager: k8s.core.v1.Service) -> k8s.core.v1.ConfigMap:
        """prometheus.yml (scraping the model servers, alerting Alertmanager) and the rules file."""
        args = self._args
        target = pulumi.Output.concat(
            object_name(alertmanager), ".", self.namespace, f".svc:{ALERTMANAGER_PORT}"
        )
        config = pulumi.Output.all(_namespaces(args), target).apply(
            lambda v: to_yaml(
                prometheus_config(v[0], args.scrape_interval, v[1], [f"/etc/prometheus/{RULES_FILE}"])
            )
        )
        return self._config_map(
            "prometheus-config", "prometheus", {"prometheus.yml": config, RULES_FILE: _rules_yaml(args)}
        )

    def _prometheus_pod(
        self, account: k8s.core.v1.ServiceAccount, files: k8s.core.v1.ConfigMap
    ) -> dict[str, Any]:
        return {
            "serviceAccountName": object_name(account),
            # Prometheus lists and watches pods (Kubernetes service discovery): it needs its token.
            "automountServiceAccountToken": True,
            "securityContext": pod_security_context(),
            "containers": [_prometheus_container(self._args)],
            "volumes": [
                {"name": "config", "configMap": {"name": object_name(files)}},
                {"name": "data", "persistentVolumeClaim": {"claimName": PROMETHEUS_DATA}},
            ],
        }

    def _discovery_access(
        self, index: int, serving_ns: pulumi.Input[str], account: pulumi.Output[str]
    ) -> None:
        """Read-only access to pods in one scraped namespace: all pod discovery needs."""
        lbl = self._labels("prometheus")
        role = k8s.rbac.v1.Role(
            f"{self._name}-prometheus-discovery-{index}",
            metadata={"namespace": serving_ns, "labels": lbl},
            rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            opts=self._child,
        )
        k8s.rbac.v1.RoleBinding(
            f"{self._name}-prometheus-discovery-binding-{index}",
            metadata={"namespace": serving_ns, "labels": lbl},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": object_name(role)},
            subjects=[{"kind": "ServiceAccount", "name": account, "namespace": self.namespace}],
            opts=self._child,
        )

    def _alertmanager(self, retrain: RetrainWebhook | None) -> k8s.core.v1.Service:
        args = self._args
        mounts: list[dict[str, Any]] = [
            {"name": "config", "mountPath": "/etc/alertmanager", "readOnly": True},
            {"name": "data", "mountPath": "/alertmanager"},
        ]
        volumes: list[dict[str, Any]] = [{"name": "data", "emptyDir": {"sizeLimit": "256Mi"}}]
        if retrain is None:
            config: pulumi.Input[str] = to_yaml(alertmanager_config(None))
        else:
            credentials = f"{TOKEN_DIR}/{retrain.token_key}"
            config = pulumi.Output.from_input(retrain.url).apply(
                lambda url: to_yaml(alertmanager_config(RetrainRoute(url, credentials, retrain.alert_names)))
            )
            mounts.append({"name": "webhook-token", "mountPath": TOKEN_DIR, "readOnly": True})
            volumes.append(
                {
                    "name": "webhook-token",
                    "secret": {
                        "secretName": retrain.token_secret_name,
                        "items": [{"key": retrain.token_key, "path": retrain.token_key}],
                    },
                }
            )
        files = self._config_map("alertmanager-config", "alertmanager", {"alertmanager.yml": config})
        volumes.append({"name": "config", "configMap": {"name": object_name(files)}})
        container = _container(
            "alertmanager", args.images.alertmanager, ALERTMANAGER_PORT, ("/-/ready", "/-/healthy"), mounts
        )
        container["args"] = [
            "--config.file=/etc/alertmanager/alertmanager.yml",
            "--storage.path=/alertmanager",
            f"--web.listen-address=:{ALERTMANAGER_PORT}",
            # One replica: no gossip port to open.
            "--cluster.listen-address=",
        ]
        pod = {
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "containers": [container],
            "volumes": volumes,
        }
        self._deployment("alertmanager", pod)
        return self._service("alertmanager", ALERTMANAGER_PORT)

    def _grafana(self, prometheus_url: pulumi.Output[str]) -> k8s.core.v1.Service:
        args = self._args
        admin = k8s.core.v1.Secret(
            f"{self._name}-grafana-admin",
            metadata={"namespace": self.namespace, "labels": self._labels("grafana")},
            type="Opaque",
            string_data={"admin-password": pulumi.Output.secret(args.grafana_admin_password)},
            opts=self._child,
        )
        provisioned: dict[str, tuple[str, str, str, pulumi.Input[str]]] = {
            # volume: (mount path, ConfigMap role, file name, contents)
            "datasources": (
                "/etc/grafana/provisioning/datasources",
                "grafana-datasources",
                "prometheus.yaml",
                prometheus_url.apply(lambda url: to_yaml(grafana_datasources(url))),
            ),
            "dashboard-provider": (
                "/etc/grafana/provisioning/dashboards",
                "grafana-dashboard-provider",
                "mlops.yaml",
                to_yaml(grafana_dashboard_provider(DASHBOARD_DIR)),
            ),
            "dashboards": (DASHBOARD_DIR, "grafana-dashboards", DASHBOARD_FILE, self._dashboard_json()),
        }
        mounts, volumes = _grafana_scratch()
        for volume, (path, role, file, text) in provisioned.items():
            files = self._config_map(role, "grafana", {file: text})
            mounts.append({"name": volume, "mountPath": path, "readOnly": True})
            volumes.append({"name": volume, "configMap": {"name": object_name(files)}})
        container = _container("grafana", args.images.grafana, GRAFANA_PORT, ("/api/health", None), mounts)
        container["env"] = _grafana_env(object_name(admin))
        pod = {
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "containers": [container],
            "volumes": volumes,
        }
        self._deployment("grafana", pod)
        return self._service("grafana", GRAFANA_PORT)

    def _dashboard_json(self) -> pulumi.Output[str]:
        args = self._args
        title = f"MLOps model serving ({args.stack})"
        return _namespaces(args).apply(lambda ns: dashboard_json(build_dashboard(ns, args.thresholds, title)))

    def _network_policies(self) -> None:
        """Each workload reaches only what it needs; everything else in the namespace is denied."""
        namespace_labels = self._labels("monitoring")
        allows = [
            dns_policy(f"{self._name}-dns", self.namespace, namespace_labels, self._child),
            *self._app_policies(),
        ]
        # Last, so that the namespace never denies what the workloads need before the allows exist.
        options = pulumi.ResourceOptions(parent=self, depends_on=allows)
        default_deny(f"{self._name}-default-deny", self.namespace, namespace_labels, options)

    def _app_policies(self) -> list[k8s.networking.v1.NetworkPolicy]:
        serving = [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "podSelector": {"matchLabels": dict(SERVING_POD_SELECTOR)},
            }
            for ns in self._args.serving_namespaces
        ]
        prometheus_egress: list[dict[str, Any]] = [
            {"to": serving, "ports": [{"port": SERVING_PORT, "protocol": "TCP"}]},
            {"to": [_pods("alertmanager")], "ports": [{"port": ALERTMANAGER_PORT, "protocol": "TCP"}]},
            # The Kubernetes API (pod discovery): its address is the cluster's, not a pod.
            {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]},
        ]
        prometheus_ingress = [
            {"from": [_pods("grafana")], "ports": [{"port": PROMETHEUS_PORT, "protocol": "TCP"}]}
        ]
        policies = [self._network_policy("prometheus", prometheus_ingress, prometheus_egress)]
        # HTTPS receivers (chat, paging) outside, and the retrain trigger beside it.
        alertmanager_egress: list[dict[str, Any]] = [{"ports": [{"port": 443, "protocol": "TCP"}]}]
        if self._args.retrain is not None:
            trigger = {"to": [_pods(RETRAIN_APP)], "ports": [{"port": RETRAIN_PORT, "protocol": "TCP"}]}
            alertmanager_egress.append(trigger)
        alertmanager_ingress = [
            {"from": [_pods("prometheus")], "ports": [{"port": ALERTMANAGER_PORT, "protocol": "TCP"}]}
        ]
        policies.append(self._network_policy("alertmanager", alertmanager_ingress, alertmanager_egress))
        if self._args.grafana:
            grafana_ingress = [
                {"from": [{"podSelector": {}}], "ports": [{"port": GRAFANA_PORT, "protocol": "TCP"}]}
            ]
            grafana_egress = [
                {"to": [_pods("prometheus")], "ports": [{"port": PROMETHEUS_PORT, "protocol": "TCP"}]},
            ]
            policies.append(self._network_policy("grafana", grafana_ingress, grafana_egress))
        return policies

    def _network_policy(
        self, app: str, ingress: list[dict[str, Any]], egress: list[dict[str, Any]]
    ) -> k8s.networking.v1.NetworkPolicy:
        return k8s.networking.v1.NetworkPolicy(
            f"{self._name}-{app}-network-policy",
            metadata={"namespace": self.namespace, "labels": self._labels(app)},
            spec={
                "podSelector": {"matchLabels": _selector(app)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": egress,
            },
            opts=self._child,
        )

    # ----------------------------------------------------------------- operator mode --

    def _operator(self, webhook: RetrainWebhook | None) -> pulumi.Output[str]:
        args, name = self._args, self._name
        extra = dict(args.operator_labels)
        groups = _namespaces(args).apply(lambda ns: rule_groups(args.thresholds, ns))
        for index, serving_ns in enumerate(args.serving_namespaces):
            k8s.apiextensions.CustomResource(
                f"{name}-pod-monitor-{index}",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata={"namespace": serving_ns, "labels": {**self._labels("prometheus"), **extra}},
                spec=_pod_monitor_spec(args.scrape_interval),
                opts=self._child,
            )
        rule = k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={
                "namespace": args.serving_namespaces[0],
                "labels": {**self._labels("prometheus"), **extra},
            },
            spec={"groups": groups},
            opts=self._child,
        )
        if args.grafana:
            k8s.core.v1.ConfigMap(
                f"{name}-grafana-dashboards",
                metadata={
                    "namespace": args.namespace,
                    # Grafana's dashboard sidecar (kube-prometheus-stack) loads ConfigMaps so labelled.
                    "labels": {**self._labels("grafana"), "grafana_dashboard": "1", **extra},
                },
                data={DASHBOARD_FILE: self._dashboard_json()},
                opts=self._child,
            )
        if webhook is not None:
            self._alertmanager_config(webhook)
        return rule.spec.apply(lambda spec: to_yaml({"groups": spec["groups"]}))

    def _alertmanager_config(self, webhook: RetrainWebhook) -> None:
        """Route the retrain alerts in the operator's Alertmanager to the trigger.

        The operator limits an AlertmanagerConfig to alerts labelled with its own namespace, so
        it lives beside the model servers, with a copy of the webhook token it can read.
        """
        args, name = self._args, self._name
        assert args.retrain is not None
        serving_ns = args.serving_namespaces[0]
        lbl = {**self._labels("alertmanager"), **dict(args.operator_labels)}
        token = k8s.core.v1.Secret(
            f"{name}-retrain-webhook-token",
            metadata={"namespace": serving_ns, "labels": lbl},
            type="Opaque",
            string_data={webhook.token_key: pulumi.Output.secret(args.retrain.webhook_token)},
            opts=self._child,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-retrain-route",
            api_version="monitoring.coreos.com/v1alpha1",
            kind="AlertmanagerConfig",
            metadata={"namespace": serving_ns, "labels": lbl},
            spec=_alertmanager_config_spec(webhook, object_name(token)),
            opts=self._child,
        )


def _prometheus_container(args: MonitoringStackArgs) -> dict[str, Any]:
    container = _container(
        "prometheus",
        args.images.prometheus,
        PROMETHEUS_PORT,
        ("/-/ready", "/-/healthy"),
        [
            {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
            {"name": "data", "mountPath": "/prometheus"},
        ],
    )
    container["args"] = [
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/prometheus",
        f"--storage.tsdb.retention.time={args.retention}",
        f"--web.listen-address=:{PROMETHEUS_PORT}",
    ]
    return container


def _grafana_env(admin_secret: pulumi.Output[str]) -> list[dict[str, Any]]:
    password = {"secretKeyRef": {"name": admin_secret, "key": "admin-password"}}
    settings = {
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_PATHS_DATA": "/var/lib/grafana",
        "GF_PATHS_LOGS": "/var/log/grafana",
        "GF_PATHS_PLUGINS": "/var/lib/grafana/plugins",
        "GF_PATHS_PROVISIONING": "/etc/grafana/provisioning",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_AUTH_ANONYMOUS_ENABLED": "false",
        # No calls home: the NetworkPolicy allows no egress beyond Prometheus and DNS.
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
    }
    env: list[dict[str, Any]] = [{"name": "GF_SECURITY_ADMIN_PASSWORD", "valueFrom": password}]
    return env + [{"name": k, "value": v} for k, v in settings.items()]


def _grafana_scratch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Grafana's writable folders (its database, logs, plugins, temp files) on emptyDirs."""
    folders = {
        "data": ("/var/lib/grafana", "1Gi"),
        "logs": ("/var/log/grafana", "256Mi"),
        "tmp": ("/tmp", "256Mi"),
    }
    mounts = [{"name": n, "mountPath": path} for n, (path, _) in folders.items()]
    volumes = [{"name": n, "emptyDir": {"sizeLimit": size}} for n, (_, size) in folders.items()]
    return mounts, volumes


def _selector(app: str) -> dict[str, str]:
    """The labels selecting one monitoring app's pods (a subset of `labels(app, "monitoring", ...)`)."""
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/component": "monitoring"}


def _pods(app: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": _selector(app)}}


def _pod_monitor_spec(interval: str) -> dict[str, Any]:
    """Scrape the model servers' `http` port as the bundled job does (same job, namespace, pod labels)."""
    return {
        "selector": {"matchLabels": dict(SERVING_POD_SELECTOR)},
        "podMetricsEndpoints": [
            {
                "port": "http",
                "path": "/metrics",
                "interval": interval,
                "relabelings": [
                    # The operator names the job <namespace>/<PodMonitor>; the rules select by ours.
                    {"targetLabel": "job", "replacement": SERVING_JOB},
                    {"sourceLabels": ["__meta_kubernetes_pod_label_mlops_dev_track"], "targetLabel": "track"},
                ],
            }
        ],
    }


def _alertmanager_config_spec(webhook: RetrainWebhook, token_secret: pulumi.Output[str]) -> dict[str, Any]:
    """The operator's form of alertmanager_config's retrain route (same grouping and matcher)."""
    return {
        "route": {
            "receiver": RETRAIN_RECEIVER,
            "groupBy": list(GROUP_BY),
            "matchers": [{"name": "alertname", "matchType": "=~", "value": "|".join(webhook.alert_names)}],
            "repeatInterval": "1h",
        },
        "receivers": [
            {
                "name": RETRAIN_RECEIVER,
                "webhookConfigs": [
                    {
                        "url": webhook.url,
                        "sendResolved": False,
                        "httpConfig": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials": {"name": token_secret, "key": webhook.token_key},
                            }
                        },
                    }
                ],
            }
        ],
    }
