#!/usr/bin/env bash
# CI step of the promotion workflow: `mlops promote SRC DST [--release ID] --yes`, which checks
# the source release, copies and registers it in the destination and writes the pin into
# Pulumi.<DST>.yaml. Then this script hands the result to the job that opens the pull request
# (that job holds the write token, this one the cloud credentials): OUT_DIR receives the new
# Pulumi.<DST>.yaml and the pull request's body (pr-body.md), and the step outputs say whether
# the pin changed and name the release.
#
# Env: OUT_DIR (required), SRC_STACK (default dev), DST_STACK (default prod), RELEASE_ID
# (optional: 12 lowercase hex characters, the release to promote; default: what SRC serves),
# MLOPS (default mlops).
# Outputs (GITHUB_OUTPUT): changed (true|false), release_id, model_version, model_name, title,
# branch.
# Exit: 0 promoted (or nothing to do), 2 bad input, else the exit code of `mlops promote`.
# Locally: OUT_DIR=/tmp/promotion scripts/ci/promote.sh   (needs the registries' credentials)
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env OUT_DIR "the folder handed to the pull-request job"
SRC_STACK="${SRC_STACK:-dev}"
DST_STACK="${DST_STACK:-prod}"
RELEASE_ID="${RELEASE_ID:-}"
valid_stack "$SRC_STACK" || fail 2 "SRC_STACK is not a stack name: '$SRC_STACK'"
valid_stack "$DST_STACK" || fail 2 "DST_STACK is not a stack name: '$DST_STACK'"
[ "$SRC_STACK" != "$DST_STACK" ] || fail 2 "SRC_STACK and DST_STACK are both '$SRC_STACK'"
if [ -n "$RELEASE_ID" ] && ! valid_release_id "$RELEASE_ID"; then
  fail 2 "release id must be 12 lowercase hex characters, as \`mlops release-id\` prints (got '${RELEASE_ID:0:40}')"
fi
stack_file="Pulumi.$DST_STACK.yaml"
[ -f "$stack_file" ] || fail 2 "no stack file $stack_file in $REPO"
[ -f "Pulumi.$SRC_STACK.yaml" ] || fail 2 "no stack file Pulumi.$SRC_STACK.yaml in $REPO"
git diff --quiet HEAD -- "$stack_file" || fail 2 "$stack_file has uncommitted changes: promote from a clean checkout"
mkdir -p "$OUT_DIR"

args=(promote "$SRC_STACK" "$DST_STACK" --yes)
if [ -n "$RELEASE_ID" ]; then args+=(--release "$RELEASE_ID"); fi
say "$MLOPS ${args[*]}"
log="$OUT_DIR/promote.log"
rc=0
"$MLOPS" "${args[@]}" > "$log" 2>&1 || rc=$?
cat "$log" >&2
if [ "$rc" -ne 0 ]; then
  fail "$rc" "mlops promote $SRC_STACK $DST_STACK failed (exit $rc); nothing to open a pull request with"
fi

if git diff --quiet HEAD -- "$stack_file"; then
  say "$stack_file is unchanged: $DST_STACK already serves that release; no pull request"
  set_output changed false
  exit 0
fi

# The pin as written: model, release id, version (the title and the checks of the next job).
pin="$(python3 - "$stack_file" <<'PY'
import sys
import yaml
config = (yaml.safe_load(open(sys.argv[1], encoding="utf-8")) or {}).get("config") or {}
pin = config.get("mlops:release") or {}
print(pin.get("model_name", ""), pin.get("release_id", ""), pin.get("model_version", ""), sep="\t")
PY
)" || fail 1 "cannot read the pin (mlops:release) from $stack_file"
IFS=$'\t' read -r model_name release_id model_version <<< "$pin"
valid_release_id "$release_id" || fail 1 "$stack_file: mlops:release.release_id is '$release_id' after the promotion, not a release id"
[[ "$model_version" =~ ^[0-9]+$ ]] || fail 1 "$stack_file: mlops:release.model_version is '$model_version', not a version number"
[[ "$model_name" =~ ^[A-Za-z0-9._-]+$ ]] || fail 1 "$stack_file: mlops:release.model_name is '$model_name'"
if [ -n "$RELEASE_ID" ] && [ "$release_id" != "$RELEASE_ID" ]; then
  fail 1 "asked for release $RELEASE_ID but $stack_file pins $release_id"
fi

cp "$stack_file" "$OUT_DIR/$stack_file"
title="Promote $model_name release $release_id (version $model_version) from $SRC_STACK to $DST_STACK"
{
  echo "## $title"
  echo
  echo "| | |"
  echo "| --- | --- |"
  echo "| model | \`$model_name\` |"
  echo "| release | \`$release_id\` |"
  echo "| registered version | $model_version |"
  echo "| from | \`$SRC_STACK\` |"
  echo "| to | \`$DST_STACK\` (\`$stack_file\`) |"
  echo
  echo "Written by \`mlops promote $SRC_STACK $DST_STACK --yes\`; only the pin (\`mlops:release\`) changes:"
  echo
  echo '```diff'
  git diff HEAD -- "$stack_file"
  echo '```'
  echo
  echo "<details><summary>Output of <code>mlops promote</code></summary>"
  echo
  echo '```text'
  # No terminal colours in a comment.
  sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 200 | cut -c1-300
  echo '```'
  echo
  echo "</details>"
  echo
  echo "Merging this pull request runs \`pulumi up\` on \`$DST_STACK\` (workflow *Deploy prod*), which"
  echo "waits for a reviewer of the \`production\` environment."
} > "$OUT_DIR/pr-body.md"

set_output changed true
set_output release_id "$release_id"
set_output model_version "$model_version"
set_output model_name "$model_name"
set_output title "$title"
set_output branch "promote/$SRC_STACK-to-$DST_STACK"
say "$stack_file pins $model_name release $release_id (version $model_version); handed to the pull-request job in $OUT_DIR"
