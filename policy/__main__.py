"""The policy pack the engine runs: `pulumi preview --policy-pack policy/`.

The Python analyzer runs this file with `runpy.run_path(<pack dir>)`, which puts only `policy/` on
`sys.path`; the repo is installed in the virtualenv (`-e .`), and the repo root is added below as a
fallback so `policy.rules` imports from a plain checkout too. Each policy is a thin module-level
validator around a plain rule in `policy.rules`, so tests run the very same rules on a render.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)

from policy import rules  # noqa: E402

PACK_NAME = "mlops-platform"

_CONFIG_PROPERTIES: dict[str, dict[str, Any]] = {
    "allowed_service_types": {
        "type": "array",
        "items": {"type": "string", "enum": list(rules.SERVICE_TYPES)},
        "default": [],
        "description": 'Service types allowed besides ClusterIP, e.g. ["LoadBalancer"].',
    },
    "digest_required_stacks": {
        "type": "array",
        "items": {"type": "string"},
        "default": ["prod"],
        "description": "Stacks (label mlops.dev/stack) that need images pinned by digest and gated releases.",
    },
}

_RULES = {rule.name: rule for rule in rules.RESOURCE_RULES}


def _schema(rule_name: str) -> PolicyConfigSchema | None:
    all_rules: list[rules.ResourceRule | rules.StackRule] = [*rules.RESOURCE_RULES, *rules.STACK_RULES]
    keys = next((r.config_keys for r in all_rules if r.name == rule_name), ())
    return PolicyConfigSchema({k: _CONFIG_PROPERTIES[k] for k in keys}) if keys else None


def _run(rule_name: str, args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    config = rules.PolicyConfig.from_mapping(args.get_config())
    for problem in _RULES[rule_name].check(args.resource_type, args.props, config):
        report_violation(rules.violation(rule_name, args.resource_type, args.name, problem).message, None)


def validate_container_security_context(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    _run("container-security-context", args, report_violation)


def validate_container_resources_and_probes(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    _run("container-resources-and-probes", args, report_violation)


def validate_image_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    _run("image-pinned", args, report_violation)


def validate_service_type_allowed(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    _run("service-type-allowed", args, report_violation)


def validate_no_plaintext_secret_env(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    _run("no-plaintext-secret-env", args, report_violation)


def validate_release_gates_passed(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    _run("release-gates-passed", args, report_violation)


def validate_artifact_bucket_protected(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    _run("artifact-bucket-protected", args, report_violation)


def validate_serving_rollout_safe(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    config = rules.PolicyConfig.from_mapping(args.get_config())
    resources: list[Mapping[str, Any]] = [
        {"type": r.resource_type, "name": r.name, "props": r.props} for r in args.resources
    ]
    by_name = {r.name: r for r in args.resources}
    for name, problem in rules.serving_rollout_safe(resources, config):
        resource = by_name.get(name)
        rtype = resource.resource_type if resource else ""
        message = rules.violation("serving-rollout-safe", rtype, name, problem).message
        report_violation(message, resource.urn if resource else None)


_VALIDATORS = {
    "container-security-context": validate_container_security_context,
    "container-resources-and-probes": validate_container_resources_and_probes,
    "image-pinned": validate_image_pinned,
    "service-type-allowed": validate_service_type_allowed,
    "no-plaintext-secret-env": validate_no_plaintext_secret_env,
    "release-gates-passed": validate_release_gates_passed,
    "artifact-bucket-protected": validate_artifact_bucket_protected,
}


def build_policies() -> list[Policy]:
    """Every rule as a mandatory policy; what `PolicyPack` gets (tests check this list)."""
    policies: list[Policy] = [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_VALIDATORS[rule.name],
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=_schema(rule.name),
        )
        for rule in rules.RESOURCE_RULES
    ]
    policies.append(
        StackValidationPolicy(
            name="serving-rollout-safe",
            description=rules.STACK_RULES[0].description,
            validate=validate_serving_rollout_safe,
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=_schema("serving-rollout-safe"),
        )
    )
    return policies


if __name__ == "__main__":
    # PolicyPack starts the analyzer's gRPC server and blocks: only when run by the engine.
    PolicyPack(
        name=PACK_NAME,
        policies=build_policies(),
        enforcement_level=EnforcementLevel.MANDATORY,
        description="Rules every mlops stack must pass: pod security, resources, pinned images, "
        "private services and buckets, secrets, safe rollouts and gated releases.",
    )
