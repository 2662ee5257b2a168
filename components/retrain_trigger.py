"""RetrainTrigger: the service that turns Alertmanager's drift alerts into a retrain pull request.

It runs `python -m model.retrain_trigger` from the serving image next to Alertmanager: a
Deployment (one replica), a ClusterIP Service, two Secrets and a NetworkPolicy that admits only
Alertmanager's pods and lets out only DNS and HTTPS to GitHub. docs/retraining.md has the loop.

Wiring Alertmanager to it (what the MonitoringStack does with `RetrainWebhook`)::

    trigger = RetrainTrigger("retrain", RetrainTriggerArgs(namespace=<Alertmanager's namespace>, ...))
    RetrainWebhook(
        url=trigger.url,                                      # POST target of the webhook receiver
        token_secret_name=trigger.webhook_token_secret_name,  # mount this Secret's key ...
        token_key=trigger.webhook_token_secret_key,           # ... as http_config.authorization
        alert_names=args.alert_names,                         #     .credentials_file (type Bearer)
    )

The webhook token has a Secret of its own, so Alertmanager's pod can mount it without ever
seeing the GitHub token.
"""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components.common import (
    ImageAccess,
    ImageSource,
    container_security_context,
    image_reference,
    labels,
    object_name,
    pod_security_context,
    resources,
    service_url,
)
from components.network import DNS_EGRESS
from components.rollout import Rollout, probe_budget_seconds
from model.retrain_trigger import (
    ALERT_NAME,
    DEFAULT_ALERT,
    GITHUB_API,
    GITHUB_TOKEN_ENV,
    REPOSITORY,
    STACK,
    WEBHOOK_PATH,
    WEBHOOK_TOKEN_ENV,
)

__all__ = [
    "ALERTMANAGER_POD_LABELS",
    "APP",
    "PORT",
    "TOKEN_KEY",
    "ContainerResources",
    "RetrainTrigger",
    "RetrainTriggerArgs",
]

APP = "retrain-trigger"
PORT = 8080
SERVICE_PORT = 80
TOKEN_KEY = "token"
"""The key of each token Secret (the webhook one is Alertmanager's credentials file)."""
ALERTMANAGER_POD_LABELS = {"app.kubernetes.io/name": "alertmanager"}
"""The pods (in the trigger's namespace) the NetworkPolicy admits."""
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|k|M|G)?$")


@dataclass(frozen=True)
class ContainerResources:
    """Requests and limits of the trigger's container (measured: ~55 MiB resident, busy or idle)."""

    cpu_request: str = "20m"
    """It waits for a few webhooks an hour."""
    memory_request: str = "96Mi"
    cpu_limit: str = "250m"
    """Start-up (imports) is the busiest it gets."""
    memory_limit: str = "192Mi"

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            if not _QUANTITY.match(value):
                raise ValueError(
                    f"resources.{key} must be a Kubernetes quantity (100m, 128Mi), got {value!r}"
                )


@dataclass(frozen=True, kw_only=True)
class RetrainTriggerArgs(ImageAccess):
    image: ImageSource
    """The serving image (it holds model/ and the trigger's dependencies)."""
    stack: str
    """The stack whose dataset the retrain workflow bumps; also the `mlops.dev/stack` label."""
    repository: str
    """owner/name of the GitHub repository whose retrain.yml opens the pull request."""
    github_token: pulumi.Input[str]
    """Secret: a token allowed to create repository_dispatch events (fine-grained: contents: write)."""
    webhook_token: pulumi.Input[str]
    """Secret: the bearer token Alertmanager sends (at least 16 characters)."""
    namespace: pulumi.Input[str] | None = None
    """Namespace of every object; Alertmanager's, since only its pods there may call the trigger.
    Required, except under MonitoringStack, which sets its own."""
    github_api_url: str = GITHUB_API
    """GitHub's REST API; GitHub Enterprise: https://HOST/api/v3."""
    alert_names: tuple[str, ...] = (DEFAULT_ALERT,)
    """Alerts that dispatch a retrain (others are answered 200 and ignored)."""
    min_interval_seconds: int = 6 * 3600
    """At most one dispatch per model in this many seconds (0: no limit)."""
    resources: ContainerResources = field(default_factory=ContainerResources)
    """The container's requests and limits."""

    def __post_init__(self) -> None:
        if not re.match(REPOSITORY, self.repository):
            raise ValueError(f"repository must be owner/name, got {self.repository!r}")
        if not re.match(STACK, self.stack):
            raise ValueError(f"stack must be a stack name (lowercase, digits, -), got {self.stack!r}")
        api = urlsplit(self.github_api_url)
        if api.scheme != "https" or not api.hostname:
            raise ValueError(f"github_api_url must be https://HOST[/path], got {self.github_api_url!r}")
        bad = [n for n in self.alert_names if not re.match(ALERT_NAME, n)]
        if not self.alert_names or bad:
            names = list(self.alert_names)
            raise ValueError(f"alert_names must be one or more Prometheus alert names, got {names!r}")
        if self.min_interval_seconds < 0:
            raise ValueError(f"min_interval_seconds must be >= 0, got {self.min_interval_seconds}")
        self._check_push_target(self.image)

    @property
    def github_port(self) -> int:
        return urlsplit(self.github_api_url).port or 443


class RetrainTrigger(pulumi.ComponentResource):
    """Alertmanager webhook -> GitHub repository_dispatch `mlops-retrain` (model/retrain_trigger.py)."""

    url: pulumi.Output[str]
    """The webhook URL Alertmanager posts to: http://<service>.<namespace>.svc.cluster.local:80/alertmanager."""
    webhook_token_secret_name: pulumi.Output[str]
    """The Secret holding the webhook token (only that token), for Alertmanager to mount."""
    webhook_token_secret_key: str
    """The key of the token in that Secret: Alertmanager's credentials_file."""
    service_name: pulumi.Output[str]
    """The Service's name."""
    deployment_name: pulumi.Output[str]
    """The Deployment's name."""
    image: pulumi.Output[str]
    """The image reference the trigger runs."""

    def __init__(
        self, name: str, args: RetrainTriggerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if args.namespace is None:
            raise ValueError("namespace is required: Alertmanager's namespace (only its pods may call)")
        super().__init__("mlops:index:RetrainTrigger", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)
        base = labels(APP, "monitoring", args.stack)
        self._selector = {k: base[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")}
        self._meta: dict[str, Any] = {"namespace": args.namespace, "labels": base}
        self.image, _ = image_reference(self, f"{name}-image", args.image, args.push_target)
        github_secret = self._token_secret("github-token", args.github_token)
        webhook_secret = self._token_secret("webhook-token", args.webhook_token)
        secrets = (object_name(github_secret), object_name(webhook_secret))
        deployment = self._deployment(self._pod_spec(args, object_name(self._account()), *secrets))
        service = self._service()
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=self._meta,
            spec=_network_policy(args, self._selector),
            opts=self._child,
        )

        self.url = pulumi.Output.concat(service_url(service), WEBHOOK_PATH)
        self.webhook_token_secret_name = object_name(webhook_secret)
        self.webhook_token_secret_key = TOKEN_KEY
        self.service_name = object_name(service)
        self.deployment_name = object_name(deployment)
        self.register_outputs(
            {
                "url": self.url,
                "webhook_token_secret_name": self.webhook_token_secret_name,
                "webhook_token_secret_key": self.webhook_token_secret_key,
                "service_name": self.service_name,
                "deployment_name": self.deployment_name,
                "image": self.image,
            }
        )

    def _token_secret(self, role: str, token: pulumi.Input[str]) -> k8s.core.v1.Secret:
        """One token per Secret, so Alertmanager can mount the webhook token without the GitHub one."""
        return k8s.core.v1.Secret(
            f"{self._name}-{role}",
            metadata=self._meta,
            type="Opaque",
            string_data={TOKEN_KEY: pulumi.Output.secret(token)},
            opts=self._child,
        )

    def _account(self) -> k8s.core.v1.ServiceAccount:
        return k8s.core.v1.ServiceAccount(
            f"{self._name}-account",
            metadata=self._meta,
            # The trigger never talks to the Kubernetes API.
            automount_service_account_token=False,
            opts=self._child,
        )

    def _deployment(self, pod: dict[str, Any]) -> k8s.apps.v1.Deployment:
        rollout = Rollout(
            ready_within_seconds=probe_budget_seconds(pod["containers"][0]), revision_history_limit=3
        )
        return k8s.apps.v1.Deployment(
            f"{self._name}-deployment",
            metadata={**self._meta, "name": APP},
            spec={
                "replicas": 1,
                # One instance holds the memory of dispatched alerts; never two at once.
                "strategy": {"type": "Recreate"},
                **rollout.spec(),
                "selector": {"matchLabels": self._selector},
                "template": {"metadata": {"labels": self._meta["labels"]}, "spec": pod},
            },
            opts=rollout.options(self._child),
        )

    def _service(self) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            f"{self._name}-service",
            metadata={**self._meta, "name": APP},
            spec={
                "type": "ClusterIP",
                "selector": self._selector,
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=self._child,
        )

    def _pod_spec(
        self,
        args: RetrainTriggerArgs,
        account: pulumi.Output[str],
        github_secret: pulumi.Output[str],
        webhook_secret: pulumi.Output[str],
    ) -> dict[str, Any]:
        pod: dict[str, Any] = {
            "serviceAccountName": account,
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "terminationGracePeriodSeconds": 15,
            "containers": [_container(args, self.image, _env(args, github_secret, webhook_secret))],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
        }
        args.add_pull_secret(pod)
        return pod


def _env(
    args: RetrainTriggerArgs, github_secret: pulumi.Output[str], webhook_secret: pulumi.Output[str]
) -> list[dict[str, Any]]:
    """The trigger's settings as MLOPS_RETRAIN_* variables; each token read from its own Secret."""
    settings = {
        "MLOPS_RETRAIN_REPOSITORY": args.repository,
        "MLOPS_RETRAIN_GITHUB_API_URL": args.github_api_url,
        "MLOPS_RETRAIN_STACK": args.stack,
        "MLOPS_RETRAIN_ALERT_NAMES": ",".join(args.alert_names),
        "MLOPS_RETRAIN_MIN_INTERVAL_SECONDS": str(args.min_interval_seconds),
        "MLOPS_RETRAIN_PORT": str(PORT),
        "TMPDIR": "/tmp",
        "HOME": "/tmp",
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in settings.items()]
    env += [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": TOKEN_KEY}}}
        for variable, secret in ((GITHUB_TOKEN_ENV, github_secret), (WEBHOOK_TOKEN_ENV, webhook_secret))
    ]
    return env


def _container(
    args: RetrainTriggerArgs, image: pulumi.Output[str], env: list[dict[str, Any]]
) -> dict[str, Any]:
    r = args.resources
    return {
        "name": APP,
        "image": image,
        "command": ["python", "-m", "model.retrain_trigger"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 20,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": resources(r.cpu_request, r.memory_request, r.cpu_limit, r.memory_limit),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _network_policy(args: RetrainTriggerArgs, selector: dict[str, str]) -> dict[str, Any]:
    """In: Alertmanager to the HTTP port. Out: the cluster DNS, and GitHub's port."""
    callers = [{"podSelector": {"matchLabels": dict(ALERTMANAGER_POD_LABELS)}}]
    return {
        "podSelector": {"matchLabels": selector},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": callers, "ports": [{"port": PORT, "protocol": "TCP"}]}],
        "egress": [
            # Also in an operator's namespace, where no namespace-wide DNS allow of ours applies.
            DNS_EGRESS,
            # GitHub's addresses are many and change: the port is what can be pinned.
            {"ports": [{"port": args.github_port, "protocol": "TCP"}]},
        ],
    }
