#!/usr/bin/env bash
# CI step of the retrain workflow (retrain.yml), started by the retrain trigger's repository_dispatch
# event `mlops-retrain`: `mlops retrain-bump` reads the event (GITHUB_EVENT_PATH), points the
# stack's mlops:training.dataset at the newest dataset version under
# mlops:monitoring.retrain.dataset_prefix (read and checked before anything is written), and this
# script hands the result to the job that opens the pull request (that job holds the write token,
# this one the dataset store's credentials): OUT_DIR receives the new Pulumi.<STACK>.yaml and the
# pull request's body (pr-body.md), and the step outputs say whether anything changed.
#
# Env: OUT_DIR (required), GITHUB_EVENT_PATH (required; set by Actions), STACK (default dev; must
# be the stack the alert names), MLOPS (default mlops), MLOPS_S3_ACCESS_KEY_ID_<STACK> and
# MLOPS_S3_SECRET_ACCESS_KEY_<STACK> (optional: the dataset store's keys; default: ambient ones).
# Outputs (GITHUB_OUTPUT): changed (true|false), dataset, branch, title.
# Exit: 0 bumped (or nothing newer), 2 bad input, else the exit code of `mlops retrain-bump`
# (2: the event, the stack's settings or the newest dataset is unusable; 3: the store failed).
# Locally: OUT_DIR=/tmp/retrain GITHUB_EVENT_PATH=event.json scripts/ci/retrain-bump.sh
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env OUT_DIR "the folder handed to the pull-request job"
require_env GITHUB_EVENT_PATH "set by GitHub Actions: the repository_dispatch event file"
STACK="${STACK:-dev}"
valid_stack "$STACK" || fail 2 "STACK is not a stack name: '$STACK'"
stack_file="Pulumi.$STACK.yaml"
[ -f "$stack_file" ] || fail 2 "no stack file $stack_file in $REPO"
[ -f "$GITHUB_EVENT_PATH" ] || fail 2 "the event file $GITHUB_EVENT_PATH does not exist"
git diff --quiet HEAD -- "$stack_file" || fail 2 "$stack_file has uncommitted changes: bump from a clean checkout"
mkdir -p "$OUT_DIR"

say "$MLOPS retrain-bump --stack $STACK --json"
rc=0
"$MLOPS" retrain-bump --stack "$STACK" --event "$GITHUB_EVENT_PATH" --json \
  > "$OUT_DIR/bump.json" 2> "$OUT_DIR/bump.log" || rc=$?
cat "$OUT_DIR/bump.log" >&2
if [ "$rc" -ne 0 ]; then
  fail "$rc" "mlops retrain-bump failed (exit $rc); nothing to open a pull request with"
fi

# The outcome, one value per line (each checked to be one line), the body into its file.
values_file="$(mktemp "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/retrain-outcome.XXXXXX")"
trap 'rm -f "$values_file"' EXIT
python3 - "$OUT_DIR/bump.json" "$OUT_DIR/pr-body.md" "$values_file" <<'PY' || fail 1 "cannot read the outcome of mlops retrain-bump ($OUT_DIR/bump.json)"
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    outcome = json.load(f)
with open(sys.argv[2], "w", encoding="utf-8") as body:
    body.write(outcome.get("body") or "")
values = ["true" if outcome.get("changed") is True else "false"]
values += [str(outcome.get(key) or "") for key in ("dataset", "branch", "title")]
if any(ch < " " or ch == "\x7f" for value in values for ch in value):
    sys.exit("an output value holds a control character")
with open(sys.argv[3], "w", encoding="utf-8") as out:
    out.write("".join(value + "\n" for value in values))
PY
mapfile -t values < "$values_file"
changed="${values[0]}" dataset="${values[1]}" branch="${values[2]}" title="${values[3]}"

if [ "$changed" != "true" ]; then
  say "nothing newer than $STACK's current dataset: no pull request"
  rm -f "$OUT_DIR/pr-body.md"
  set_output changed false
  exit 0
fi
! git diff --quiet HEAD -- "$stack_file" || fail 1 "mlops retrain-bump reported a change, but $stack_file is unchanged"
[[ "$branch" =~ ^retrain/[a-z][a-z0-9-]{0,30}/[a-z][a-z0-9-]{0,62}$ ]] || fail 1 "unexpected branch name '$branch'"

{
  echo
  echo "The change, as \`mlops retrain-bump\` wrote it:"
  echo
  echo '```diff'
  git diff HEAD -- "$stack_file"
  echo '```'
} >> "$OUT_DIR/pr-body.md"
cp "$stack_file" "$OUT_DIR/$stack_file"
set_output changed true
set_output dataset "$dataset"
set_output branch "$branch"
set_output title "$title"
say "$stack_file now trains on $dataset; handed to the pull-request job in $OUT_DIR"
