#!/usr/bin/env bash
# CI step of the promotion workflow, in the job that opens the pull request: take the
# Pulumi.<DST>.yaml that scripts/ci/promote.sh handed over (an artifact of the job that holds the
# cloud credentials) and put it into this checkout, after checking that it changes nothing but
# the pin (config key mlops:release) and pins the release the promotion reported.
#
# Env: PROMOTION_DIR (required: the downloaded folder: Pulumi.<DST>.yaml and pr-body.md),
# DST_STACK (default prod), RELEASE_ID (required: the release id promote.sh reported).
# Exit: 0 applied, 1 the handed-over file changes more than the pin (or is not the release),
# 2 bad input.
# Locally: PROMOTION_DIR=/tmp/promotion RELEASE_ID=<id> scripts/ci/apply-promotion.sh
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env PROMOTION_DIR "the folder the promotion job's artifact was downloaded to"
require_env RELEASE_ID "the release id the promotion job reported"
DST_STACK="${DST_STACK:-prod}"
valid_stack "$DST_STACK" || fail 2 "DST_STACK is not a stack name: '$DST_STACK'"
valid_release_id "$RELEASE_ID" || fail 2 "RELEASE_ID must be 12 lowercase hex characters (got '${RELEASE_ID:0:40}')"
stack_file="Pulumi.$DST_STACK.yaml"
new="$PROMOTION_DIR/$stack_file"
[ -f "$new" ] || fail 2 "$new not found (did the promotion job upload it?)"
[ -f "$PROMOTION_DIR/pr-body.md" ] || fail 2 "$PROMOTION_DIR/pr-body.md not found"
[ -f "$stack_file" ] || fail 2 "no stack file $stack_file in $REPO"

python3 "$(dirname "${BASH_SOURCE[0]}")/stack_change.py" --name ci/apply-promotion "$stack_file" "$new" \
  --only mlops:release --expect "mlops:release.release_id=$RELEASE_ID" \
  || fail 1 "$new is not a promotion of $stack_file (see above); nothing applied"
cp "$new" "$stack_file"
say "$stack_file now pins release $RELEASE_ID ($(git diff --numstat -- "$stack_file" | awk '{print $1 " lines in, " $2 " out"}'))"
