"""When scripts/sanitize.sh runs these tests, make sure they really use
the sanitized build of emu._ring and not the in-tree one."""
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _sanitized_build_in_use():
    want = os.environ.get("EMU_RING_EXPECT_DIR")
    if want:
        import emu._ring
        got = os.path.dirname(os.path.abspath(emu._ring.__file__))
        assert got == os.path.abspath(want), f"emu._ring loaded from {got}, not {want}"
    yield
