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

python3 "$(dirname "${BASH_SOURCE[0]}")/stack_change.py" --name ci/apply-retrain "$stack_file" "$new" \
  --only mlops:training.dataset --expect "mlops:training.dataset=$DATASET" \
  || fail 1 "$new is not a dataset bump of $stack_file (see above); nothing applied"
cp "$new" "$stack_file"
say "$stack_file now trains on $DATASET ($(git diff --numstat -- "$stack_file" | awk '{print $1 " lines in, " $2 " out"}'))"
