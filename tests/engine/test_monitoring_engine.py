"""MonitoringStack through the real Pulumi engine: a preview of dev shows its objects.

Runs on the engine fixture's copy of the repository (render mode, file:// backend); see
tests/engine/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.engine.conftest import Engine

pytestmark = pytest.mark.slow

COMPONENT = "mlops:index:MonitoringStack"


def _steps(preview: dict[str, object]) -> dict[str, str]:
    """`<type>::<name>` -> the parent type chain of each step's URN (any op: create or same)."""
    out = {}
    for step in preview.get("steps", []):  # type: ignore[attr-defined]
        urn = str(step["urn"])
        chain, name = urn.split("::")[-2], urn.split("::")[-1]
        out[f"{chain.split('$')[-1]}::{name}"] = chain
    return out


def test_dev_preview_shows_the_monitoring_stack(engine: Engine) -> None:
    # --show-sames: earlier tests may have run `up` already, making every step a "same".
    steps = _steps(engine.preview_json("dev", "--show-sames"))
    assert f"{COMPONENT}::monitoring" in steps
    expected = {
        "kubernetes:core/v1:Namespace::monitoring-namespace",
        "kubernetes:apps/v1:Deployment::monitoring-prometheus",
        "kubernetes:apps/v1:Deployment::monitoring-alertmanager",
        "kubernetes:apps/v1:Deployment::monitoring-grafana",
        "kubernetes:core/v1:ConfigMap::monitoring-prometheus-config",
        "kubernetes:core/v1:PersistentVolumeClaim::monitoring-prometheus-data",
        "kubernetes:rbac.authorization.k8s.io/v1:Role::monitoring-prometheus-discovery-0",
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding::monitoring-prometheus-discovery-binding-0",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy::monitoring-prometheus-network-policy",
        "kubernetes:core/v1:Secret::monitoring-grafana-admin",
    }
    assert expected <= set(steps), sorted(expected - set(steps))
    for key in expected:
        # Children of the component: its type is in each URN's parent chain.
        assert steps[key].startswith(f"{COMPONENT}$"), (key, steps[key])
