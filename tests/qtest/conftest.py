"""QEMU 7.2's own test programs, built once per machine by
scripts/build-qemu-tests.sh (cold: minutes; cached: milliseconds)."""
from __future__ import annotations

import os
import subprocess

import pytest

from .qemu_build import BUILD_SCRIPT, BUILD_TIMEOUT


@pytest.fixture(scope="session")
def qemu_tests() -> dict[str, str]:
    """{"QOS_TEST": path, "QEMU_REFERENCE": path of the qtest-capable reference}."""
    out = subprocess.run([BUILD_SCRIPT, "--reference"], capture_output=True, text=True,
                         timeout=BUILD_TIMEOUT)
    assert out.returncode == 0, f"build-qemu-tests.sh failed:\n{out.stderr[-4000:]}"
    paths = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    for key in ("QOS_TEST", "QEMU_REFERENCE"):
        assert os.access(paths[key], os.X_OK), f"{key} {paths.get(key)} is not executable"
    return paths
