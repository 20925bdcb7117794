"""The window-safety tests again with the C engine built with ASan+UBSan
(scripts/sanitize.sh): a peer re-maps and disconnects while VM2's copy loop
runs, and VM2's driver stops touching the old window before it is unmapped
-- a late access would fault (PROT_NONE) or be reported."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = re.compile(r"runtime error:|ERROR: AddressSanitizer|SUMMARY: \w+Sanitizer")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_remap_and_disconnect_under_asan_and_ubsan():
    if os.environ.get("EMU_RING_EXPECT_DIR"):
        pytest.fail("already inside a sanitizer run: do not nest it")
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run([os.path.join(ROOT, "scripts", "sanitize.sh"),
                        "tests/machine/test_vhost_pci_pair.py", "-k",
                        "remap or forward or feature_dance or echo"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=230)
    out = p.stdout + p.stderr
    reports = [line for line in out.splitlines() if REPORT.search(line)]
    assert not reports, "sanitizer reports:\n" + "\n".join(reports[:40])
    assert p.returncode == 0, out[-4000:]
    assert re.search(r"\d+ passed", out), out[-2000:]
    assert "sanitize: clean" in out
