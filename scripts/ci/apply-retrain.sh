#!/usr/bin/env bash
# CI step of the retrain workflow, in the job that opens the pull request: take the
# Pulumi.<STACK>.yaml that scripts/ci/retrain-bump.sh handed over (an artifact of the job that
# read the dataset store) and put it into this checkout, after checking that it changes nothing
# but mlops:training.dataset and that the dataset is the one the bump reported.
#
# Env: RETRAIN_DIR (required: the downloaded folder: Pulumi.<STACK>.yaml and pr-body.md),
# STACK (default dev), DATASET (required: the dataset URI retrain-bump.sh reported).
# Exit: 0 applied, 1 the handed-over file changes more than the dataset (or another one), 2 bad
# input.
# Locally: RETRAIN_DIR=/tmp/retrain DATASET=s3://... scripts/ci/apply-retrain.sh
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env RETRAIN_DIR "the folder the bump job's artifact was downloaded to"
require_env DATASET "the dataset URI the bump job reported"
STACK="${STACK:-dev}"
valid_stack "$STACK" || fail 2 "STACK is not a stack name: '$STACK'"
stack_file="Pulumi.$STACK.yaml"
new="$RETRAIN_DIR/$stack_file"
[ -f "$new" ] || fail 2 "$new not found (did the bump job upload it?)"
[ -f "$RETRAIN_DIR/pr-body.md" ] || fail 2 "$RETRAIN_DIR/pr-body.md not found"
[ -f "$stack_file" ] || fail 2 "no stack file $stack_file in $REPO"

python3 - "$stack_file" "$new" "$DATASET" <<'PY' || fail 1 "$new is not a dataset bump of $stack_file (see above); nothing applied"
import sys
import yaml

old_path, new_path, dataset = sys.argv[1:4]
with open(old_path, encoding="utf-8") as f:
    old = yaml.safe_load(f) or {}
with open(new_path, encoding="utf-8") as f:
    new = yaml.safe_load(f) or {}
problems = []
if set(old) != set(new) or any(old[k] != new[k] for k in old if k != "config"):
    problems.append("top-level keys other than config differ")
old_config, new_config = old.get("config") or {}, new.get("config") or {}
for key in sorted(set(old_config) | set(new_config)):
    if key != "mlops:training" and old_config.get(key) != new_config.get(key):
        problems.append(f"config key {key} differs")
old_spec, new_spec = old_config.get("mlops:training") or {}, new_config.get("mlops:training") or {}
for key in sorted(set(old_spec) | set(new_spec)):
    if key != "dataset" and old_spec.get(key) != new_spec.get(key):
        problems.append(f"mlops:training.{key} differs")
if new_spec.get("dataset") != dataset:
    problems.append(f"mlops:training.dataset is {new_spec.get('dataset')!r}, expected {dataset!r}")
for problem in problems:
    print(f"[ci/apply-retrain] {new_path}: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
cp "$new" "$stack_file"
say "$stack_file now trains on $DATASET ($(git diff --numstat -- "$stack_file" | awk '{print $1 " lines in, " $2 " out"}'))"
