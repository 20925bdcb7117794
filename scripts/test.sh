#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 clone: installs the real peers
# (apt), builds emu into .venv, runs pytest.  Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
# QEMU 7.2's qos-test and a qtest-capable reference QEMU, from Debian's source
# package (cached: nothing to do the second time); tests/qtest runs qos-test
# against emu-system-x86_64 and compares emu with the reference
scripts/build-qemu-tests.sh --reference
[ -x .venv/bin/python ] || python3 -m venv .venv
# compat mode: the editable install is a path in a .pth; setuptools' default
# import hook costs every Python process (each VM) ~12 ms before its first line
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' \
    --config-settings editable_mode=compat
.venv/bin/python -m compileall -q emu >/dev/null   # start-up without compiling sources
exec .venv/bin/python -m pytest tests "$@"
