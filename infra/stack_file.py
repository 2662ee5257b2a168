"""Writing a stack's release pin, or its dataset, into `Pulumi.<stack>.yaml` as a reviewer would by hand.

A round trip through ruamel.yaml keeps the file's comments, key order and quoting: only the
values of `mlops:release` (or the line of `mlops:training.dataset`) change, so the pull request
that promotes a release (or retrains on newer data) is a diff of those lines. The new text is
validated as stack config before it replaces the file, and the replacement is atomic (a
temporary file renamed over it), so a failure leaves the file as it was.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from infra.config import NAMESPACE, ConfigError, PinnedRelease, load_stack_file

__all__ = ["RELEASE_KEY", "TRAINING_KEY", "read_pin", "write_dataset", "write_pin"]

RELEASE_KEY = f"{NAMESPACE}:release"
TRAINING_KEY = f"{NAMESPACE}:training"


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode: comments, order and quotes survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line that was not touched
    return yaml


def read_pin(stack_file: Path) -> PinnedRelease | None:
    config = _yaml().load(stack_file.read_text()).get("config") or {}
    raw = config.get(RELEASE_KEY)
    return PinnedRelease.model_validate(dict(raw)) if raw else None


def write_pin(stack_file: Path, pin: PinnedRelease) -> bool:
    """Set the stack's `mlops:release` to `pin`, changing nothing else; False if it already is."""
    yaml = _yaml()
    document = yaml.load(stack_file.read_text())
    config = document.get("config")
    if not isinstance(config, CommentedMap) or not isinstance(config.get(RELEASE_KEY), CommentedMap):
        raise ConfigError(
            f"{stack_file.name} has no {RELEASE_KEY} mapping: only a stack that serves a pinned "
            "release can be promoted to (add the mapping, or promote to another stack)"
        )
    current: CommentedMap = config[RELEASE_KEY]
    wanted: dict[str, Any] = pin.model_dump(mode="json", exclude_defaults=True)
    if all(_same(current.get(key), value) for key, value in wanted.items()):
        return False
    for key, value in wanted.items():
        # Assigning keeps the key's position and comments; a str keeps its quoting style when
        # the old value had one (preserve_quotes), so "7" stays "7".
        old = current.get(key)
        current[key] = type(old)(value) if isinstance(old, str) and isinstance(value, str) else value
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    _replace_checked(stack_file, buffer.getvalue())
    return True


def write_dataset(stack_file: Path, uri: str) -> bool:
    """Set the stack's `mlops:training.dataset` to `uri`, changing no other line; False if it already is."""
    yaml = _yaml()
    text = stack_file.read_text()
    document = yaml.load(text)
    config = document.get("config")
    training = config.get(TRAINING_KEY) if isinstance(config, CommentedMap) else None
    if not isinstance(training, CommentedMap) or "dataset" not in training:
        raise ConfigError(f"{stack_file.name} has no {TRAINING_KEY}.dataset: only a training stack has one")
    old = training["dataset"]
    if str(old) == uri:
        return False
    training["dataset"] = type(old)(uri) if isinstance(old, str) else uri  # keeps its quoting
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    before, after = text.splitlines(), buffer.getvalue().splitlines()
    if len(before) != len(after) or sum(a != b for a, b in zip(before, after, strict=True)) != 1:
        raise ConfigError(
            f"{stack_file.name}: writing {TRAINING_KEY}.dataset would reformat other lines; "
            f"set it by hand to {uri}"
        )
    _replace_checked(stack_file, buffer.getvalue())
    return True


def _same(old: Any, new: Any) -> bool:
    return str(old) == str(new) if old is not None else False


def _replace_checked(stack_file: Path, text: str) -> None:
    """Validate `text` as the stack's config, then swap it in atomically."""
    stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    load_stack_file(stack, stack_file.parent, text=text)
    tmp = stack_file.with_name(f".{stack_file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, stack_file)
    finally:
        tmp.unlink(missing_ok=True)
