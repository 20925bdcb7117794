#!/usr/bin/env bash
# The main job: build emu into .venv and run the live benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh --build-only
[ -x .venv/bin/python ] || python3 -m venv .venv
# compat mode: the editable install is a path in a .pth; setuptools' default
# import hook costs every Python process (each VM) ~12 ms before its first line
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' \
    --config-settings editable_mode=compat
# byte-compile emu: an editable install does not, and a VM that compiles its
# sources at every start (PYTHONDONTWRITEBYTECODE) starts tens of ms later
.venv/bin/python -m compileall -q emu >/dev/null
exec .venv/bin/emu bench "$@"
