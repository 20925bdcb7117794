#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 clone: installs the real peers
# (apt), builds emu into .venv, runs pytest.  Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest tests "$@"
