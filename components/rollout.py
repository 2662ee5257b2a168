"""How the stacks' Deployments roll out, and how long `pulumi up` waits for a rollout.

Kubernetes marks a rollout failed (condition Progressing=False, reason ProgressDeadlineExceeded)
once it made no progress for `progressDeadlineSeconds`. The Kubernetes provider's Deployment
await does not stop there: it logs the condition as a warning and keeps waiting until its own
timeout (10 minutes, or the resource's customTimeouts), then fails with the condition's message
(provider/pkg/await/deployment.go). So the timeout is what fails `pulumi up`, and `Rollout` sets it
from the deadline: never shorter than a rollout Kubernetes still calls progressing, at most
`CONTROLLER_SLACK_SECONDS` longer than Kubernetes takes to call a stalled one failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

__all__ = ["CONTROLLER_SLACK_SECONDS", "Rollout", "probe_budget_seconds"]

CONTROLLER_SLACK_SECONDS = 30
"""Time the Deployment controller may take to write the ProgressDeadlineExceeded condition."""

# Kubernetes' probe defaults.
_PERIOD, _FAILURES = 10, 3


def _probe_seconds(probe: Mapping[str, Any] | None, failures: bool) -> int:
    if not probe:
        return 0
    period = int(probe.get("periodSeconds", _PERIOD))
    times = int(probe.get("failureThreshold", _FAILURES)) if failures else 1
    return int(probe.get("initialDelaySeconds", 0)) + period * times


def probe_budget_seconds(container: Mapping[str, Any]) -> int:
    """How long a started container may take to turn ready before its probes give up on it.

    The startup probe (else the liveness probe) restarts a container that does not answer within
    initialDelay + period x failureThreshold; the first readiness check after that takes up to one
    more readiness period.
    """
    guard = container.get("startupProbe") or container.get("livenessProbe")
    return _probe_seconds(guard, failures=True) + _probe_seconds(container.get("readinessProbe"), False)


@dataclass(frozen=True)
class Rollout:
    """A Deployment's rollout bounds: its spec fields and the provider's timeouts that follow."""

    ready_within_seconds: int
    """The longest a new pod's container may take to turn ready (`probe_budget_seconds`)."""
    min_ready_seconds: int = 10
    """A new pod counts as available only after staying ready this long (a pod that crashes
    right after turning ready does not let the rollout replace the next good one)."""
    progress_deadline_seconds: int = 300
    """Without progress for this long, Kubernetes marks the rollout failed."""
    revision_history_limit: int = 5
    """Old ReplicaSets kept for `kubectl rollout undo`."""
    max_pods: int = 1
    """Pods a rollout brings up one after another: the most replicas the Deployment may run with
    maxSurge 1 (the autoscaler's maximum); 1 with the Recreate strategy."""

    def __post_init__(self) -> None:
        if self.min_ready_seconds < 1:
            raise ValueError(f"min_ready_seconds must be >= 1, got {self.min_ready_seconds}")
        if self.revision_history_limit < 1:
            raise ValueError(f"revision_history_limit must be >= 1, got {self.revision_history_limit}")
        if self.max_pods < 1:
            raise ValueError(f"max_pods must be >= 1, got {self.max_pods}")
        needed = self.ready_within_seconds + self.min_ready_seconds
        if self.progress_deadline_seconds <= needed:
            raise ValueError(
                f"progress_deadline_seconds ({self.progress_deadline_seconds}) must exceed the "
                f"{needed} s a new pod may need to become available (its probes allow "
                f"{self.ready_within_seconds} s to turn ready, then min_ready_seconds "
                f"{self.min_ready_seconds}), or every slow start is reported as a failed rollout"
            )

    @property
    def timeout_seconds(self) -> int:
        """How long `pulumi up` waits for the rollout: each pod in turn may use up the deadline."""
        return self.max_pods * self.progress_deadline_seconds + CONTROLLER_SLACK_SECONDS

    def spec(self) -> dict[str, int]:
        """The Deployment spec fields."""
        return {
            "minReadySeconds": self.min_ready_seconds,
            "progressDeadlineSeconds": self.progress_deadline_seconds,
            "revisionHistoryLimit": self.revision_history_limit,
        }

    def options(self, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        """`opts` with create and update timeouts matching the deadline."""
        timeout = f"{self.timeout_seconds}s"
        return pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout)),
        )
