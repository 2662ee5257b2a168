#!/usr/bin/env bash
# CI step: write the kubeconfig that a deploy or preview job gets from a GitHub secret to a
# private file under RUNNER_TEMP and point KUBECONFIG at it for the later steps (GITHUB_ENV).
# It must hold the contexts the stack files name (mlops:kubernetes.context). Its content never
# reaches the log or the repository.
#
# Env: KUBECONFIG_DATA (required: the kubeconfig, from a secret), KUBECONFIG_SECRET (the secret's
# name, for the error message), RUNNER_TEMP (default /tmp), GITHUB_ENV (set by Actions).
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env KUBECONFIG_DATA "set the GitHub secret ${KUBECONFIG_SECRET:-KUBECONFIG_DATA} to a kubeconfig (docs/deploy.md, CI/CD)"
dir="$(mktemp -d "${RUNNER_TEMP:-/tmp}/kubeconfig.XXXXXX")"
file="$dir/config"
( umask 077 && printf '%s\n' "${KUBECONFIG_DATA%$'\n'}" > "$file" )
# A kubeconfig (YAML or JSON) has a clusters list; catch a secret that holds something else
# here rather than as a provider error in the middle of a preview.
grep -Eq '^clusters:|"clusters"[[:space:]]*:' "$file" \
  || fail 1 "${KUBECONFIG_SECRET:-KUBECONFIG_DATA} does not look like a kubeconfig (no 'clusters')"
if [ -n "${GITHUB_ENV:-}" ]; then echo "KUBECONFIG=$file" >> "$GITHUB_ENV"; fi
say "kubeconfig written to $file; KUBECONFIG set for the next steps"
