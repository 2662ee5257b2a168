"""Is NEW the stack file OLD changed at one config key (or one field of it), to an expected value?

    python3 stack_change.py --name NAME OLD NEW --only KEY[.FIELD] --expect KEY.FIELD=VALUE

The pull-request jobs of the promotion and retrain workflows take a stack file that another job
wrote and check it with this before it enters the checkout: a promotion may change only
`mlops:release` (and must pin the release it reported), a retrain only
`mlops:training.dataset`. Prints each problem (prefixed `[NAME] NEW:`) to stderr; exit 0 when
there is none, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml


def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def problems(old: dict[str, Any], new: dict[str, Any], only: str, expect: str) -> list[str]:
    found = []
    if set(old) != set(new) or any(old[k] != new[k] for k in old if k != "config"):
        found.append("top-level keys other than config differ")
    old_config, new_config = old.get("config") or {}, new.get("config") or {}
    key, _, field = only.partition(".")
    for name in sorted(set(old_config) | set(new_config)):
        before, after = old_config.get(name), new_config.get(name)
        if name != key:
            if before != after:
                found.append(f"config key {name} differs")
        elif field:
            before, after = before or {}, after or {}
            found += [
                f"{key}.{f} differs"
                for f in sorted(set(before) | set(after))
                if f != field and before.get(f) != after.get(f)
            ]
    path, _, value = expect.partition("=")
    expected_key, _, expected_field = path.partition(".")
    actual = (new_config.get(expected_key) or {}).get(expected_field)
    if actual != value:
        found.append(f"{path} is {actual!r}, expected {value!r}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--only", required=True)
    parser.add_argument("--expect", required=True)
    args = parser.parse_args()
    found = problems(_load(args.old), _load(args.new), args.only, args.expect)
    for problem in found:
        print(f"[{args.name}] {args.new}: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
