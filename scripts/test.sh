#!/usr/bin/env bash
# Installs everything the tests need, then runs the whole suite. Extra args go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-venv.sh"
cd "$ROOT"
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
# pytest's 5 means no test ran: that is a failure here, never a pass.
exit "$status"
