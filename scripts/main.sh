#!/usr/bin/env bash
# The main job: build emu into .venv and run the live benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh --build-only
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/emu bench "$@"
