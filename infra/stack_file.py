"""Writing a stack's release pin, or its dataset, into `Pulumi.<stack>.yaml` as a reviewer would by hand.

A round trip through ruamel.yaml keeps the file's comments, key order and quoting: only the
values of `mlops:release` (or the line of `mlops:training.dataset`) change, so the pull request
that promotes a release (or retrains on newer data) is a diff of those lines; a write that would
change any other line is refused. The new text is validated as stack config before it replaces
the file, and the replacement is atomic (a temporary file renamed over it), so a failure leaves
the file as it was.
"""

from __future__ import annotations

import difflib
import io
import os
from collections.abc import Callable
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
    # Sequences as `pulumi config set` writes them (`key:` then `  - item`), so they round-trip.
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def read_pin(stack_file: Path) -> PinnedRelease | None:
    config = _yaml().load(stack_file.read_text()).get("config") or {}
    raw = config.get(RELEASE_KEY)
    return PinnedRelease.model_validate(dict(raw)) if raw else None


def write_pin(stack_file: Path, pin: PinnedRelease) -> bool:
    """Set the stack's `mlops:release` to `pin`, changing nothing else; False if it already is."""
    wanted: dict[str, Any] = pin.model_dump(mode="json", exclude_defaults=True)

    def mutate(config: Any) -> int:
        current = config.get(RELEASE_KEY) if isinstance(config, CommentedMap) else None
        if not isinstance(current, CommentedMap):
            raise ConfigError(
                f"{stack_file.name} has no {RELEASE_KEY} mapping: only a stack that serves a pinned "
                "release can be promoted to (add the mapping, or promote to another stack)"
            )
        changed = {key: value for key, value in wanted.items() if not _same(current.get(key), value)}
        for key, value in changed.items():
            current[key] = _like(current.get(key), value)
        return len(changed)

    return _edit(stack_file, mutate, f"{RELEASE_KEY} to release {pin.release_id}")


def write_dataset(stack_file: Path, uri: str) -> bool:
    """Set the stack's `mlops:training.dataset` to `uri`, changing no other line; False if it already is."""

    def mutate(config: Any) -> int:
        training = config.get(TRAINING_KEY) if isinstance(config, CommentedMap) else None
        if not isinstance(training, CommentedMap) or "dataset" not in training:
            raise ConfigError(
                f"{stack_file.name} has no {TRAINING_KEY}.dataset: only a training stack has one"
            )
        if str(training["dataset"]) == uri:
            return 0
        training["dataset"] = _like(training["dataset"], uri)
        return 1

    return _edit(stack_file, mutate, f"{TRAINING_KEY}.dataset to {uri}")


def _edit(stack_file: Path, mutate: Callable[[Any], int], what: str) -> bool:
    """Let `mutate` set values in the file's `config`, then write the file back if it set any.

    `mutate` returns how many values it set; the new text may differ from the old in at most as
    many lines (one per value), so a round trip that would reformat anything else is refused.
    """
    yaml = _yaml()
    text = stack_file.read_text()
    document = yaml.load(text)
    values = mutate(document.get("config"))
    if not values:
        return False
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    if _lines_changed(text, buffer.getvalue()) > values:
        raise ConfigError(f"{stack_file.name}: writing {what} would reformat other lines; set it by hand")
    _replace_checked(stack_file, buffer.getvalue())
    return True


def _lines_changed(before: str, after: str) -> int:
    matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


def _like(old: Any, new: Any) -> Any:
    """`new` in the string type of `old`, so a quoted value keeps its quotes: "7" stays "7"."""
    return type(old)(new) if isinstance(old, str) and isinstance(new, str) else new


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
