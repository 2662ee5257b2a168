"""Release logic the program needs: turning a pinned release from stack config into what serving runs."""

from __future__ import annotations

import pulumi

from components.serving import ServedRelease
from infra.config import PinnedRelease
from model.artifact import release_uri

__all__ = ["pinned_release"]


def pinned_release(pin: PinnedRelease, artifact_root: pulumi.Input[str]) -> ServedRelease:
    """A release promoted into this stack: its immutable URI under this stack's artifact root."""
    return ServedRelease(
        release_id=pin.release_id,
        model_uri=pulumi.Output.from_input(artifact_root).apply(
            lambda root: release_uri(root, pin.model_name, pin.release_id)
        ),
        model_sha256=pin.model_sha256,
        model_version=pin.model_version,
        gates=pin.gates,
    )
