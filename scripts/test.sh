#!/usr/bin/env bash
# Installs everything the tests need, then runs the whole suite. Extra args go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-venv.sh"
cd "$ROOT"
# The real Pulumi engine for tests/engine: from PATH, Pulumi's installer, or built from the Go
# module proxy (first build ~35 min with empty Go caches, ~2 min with warm ones, seconds after).
"$ROOT/scripts/bootstrap-engine"
# promtool, prometheus, alertmanager for tests/monitoring; its upstream builds also go into the
# cluster's monitoring images (bootstrap-cluster re-checks them in seconds).
"$ROOT/scripts/bootstrap-monitoring" >/dev/null
"$ROOT/scripts/bootstrap-cluster"  # the local Kubernetes and images for tests/cluster (docs/cluster.md)
"$ROOT/scripts/bootstrap-actionlint" >/dev/null  # actionlint for tests/ci (the workflows)
# Static checks: seconds, and a lint or type error fails before minutes of tests.
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy" components infra model policy benchmarks tests
# pytest's exit status is the script's (5, no test ran, is a failure here too). Two workers
# (MLOPS_TEST_WORKERS; 0 runs in this process), each taking whole modules (tests/conftest.py):
# much of the suite waits on services, pods and the engine, so the second core has work.
exec "$VENV/bin/python" -m pytest -n "${MLOPS_TEST_WORKERS:-2}" "$@"
