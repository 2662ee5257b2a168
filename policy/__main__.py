"""The policy pack the engine runs: `pulumi preview --policy-pack policy/`.

The Python analyzer runs this file with `runpy.run_path(<pack dir>)`, which puts only `policy/` on
`sys.path`; the repo is installed in the virtualenv (`-e .`), and the repo root is added below as a
fallback so `policy.rules` imports from a plain checkout too. Each policy is a thin validator
built around a plain rule in `policy.rules`, so tests run the very same rules on a render.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyPack,
    PolicyResource,
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
        "description": "Production stacks: images by digest, gated releases, topology spread, "
        "protected volumes and buckets.",
    },
    "min_run_as_user": {
        "type": "integer",
        "minimum": 1,
        "default": rules.PolicyConfig.min_run_as_user,
        "description": "Lowest UID a container may run as.",
    },
}


def _schema(config_keys: tuple[str, ...]) -> PolicyConfigSchema | None:
    return PolicyConfigSchema({k: _CONFIG_PROPERTIES[k] for k in config_keys}) if config_keys else None


def _resource(r: ResourceValidationArgs | PolicyResource) -> rules.Resource:
    """What a rule sees: the engine's view, with the stack from the URN and the protect option."""
    return rules.Resource(
        type=r.resource_type,
        name=r.name,
        props=r.props,
        stack=rules.stack_of_urn(r.urn),
        protect=r.opts.protect,
        urn=r.urn,
    )


def _resource_validator(
    rule: rules.ResourceRule,
) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        config = rules.PolicyConfig.from_mapping(args.get_config())
        resource = _resource(args)
        for problem in rule.check(resource, config):
            report_violation(rules.violation(rule.name, resource, problem).message, None)

    return validate


def _stack_validator(rule: rules.StackRule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        config = rules.PolicyConfig.from_mapping(args.get_config())
        resources = [_resource(r) for r in args.resources]
        for resource, problem in rule.check(resources, config):
            report_violation(rules.violation(rule.name, resource, problem).message, resource.urn)

    return validate


def build_policies() -> list[Policy]:
    """Every rule as a mandatory policy; what `PolicyPack` gets (tests check this list)."""
    policies: list[Policy] = [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_resource_validator(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=_schema(rule.config_keys),
        )
        for rule in rules.RESOURCE_RULES
    ]
    policies += [
        StackValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_stack_validator(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=_schema(rule.config_keys),
        )
        for rule in rules.STACK_RULES
    ]
    return policies


if __name__ == "__main__":
    # PolicyPack starts the analyzer's gRPC server and blocks: only when run by the engine.
    PolicyPack(
        name=PACK_NAME,
        policies=build_policies(),
        enforcement_level=EnforcementLevel.MANDATORY,
        description="Rules every mlops stack must pass: pod security, resources and probes, pinned "
        "images, private services, network policies, labels, namespaces, protected and encrypted "
        "state, secrets, safe rollouts and gated releases.",
    )
