"""What can end a release, and the one exit code each outcome has everywhere.

`python -m model.train`, `mlops release` and the training Job share these codes, so a failed Job
says why in its exit status alone: only a registry or store failure is worth retrying
(`python -m model.train --retries`), the others fail the same way again until someone changes
the inputs.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

__all__ = [
    "BadConfig",
    "ExitCode",
    "RegistryError",
    "ReleaseError",
    "ReleaseMismatch",
    "exit_code_for",
]


class ExitCode(IntEnum):
    OK = 0
    """Released, or already registered."""
    CRASHED = 1
    """An unexpected error (a bug): Python's own status for an uncaught exception."""
    BAD_CONFIG = 2
    """The spec, the stack config or the dataset is wrong: fix it, re-running changes nothing."""
    REGISTRY = 3
    """MLflow or an S3 store failed or could not be reached: transient, retried."""
    RELEASE_MISMATCH = 4
    """The Job computed another release id than `pulumi preview` did: inputs differ."""
    GATE_FAILED = 5
    """A blocking quality gate failed: the run is logged, nothing is registered."""


class ReleaseError(Exception):
    """Base of every expected way a release ends early; carries its exit code."""

    exit_code: ClassVar[ExitCode] = ExitCode.CRASHED


class BadConfig(ReleaseError, ValueError):
    """A spec, config value or dataset that cannot work as given."""

    exit_code = ExitCode.BAD_CONFIG


class RegistryError(ReleaseError, RuntimeError):
    """The tracking server, the artifact store or the dataset's store refused or was unreachable."""

    exit_code = ExitCode.REGISTRY


class ReleaseMismatch(ReleaseError, RuntimeError):
    """The release id computed here differs from the one the Pulumi program computed."""

    exit_code = ExitCode.RELEASE_MISMATCH


def exit_code_for(exc: BaseException) -> ExitCode:
    return exc.exit_code if isinstance(exc, ReleaseError) else ExitCode.CRASHED
