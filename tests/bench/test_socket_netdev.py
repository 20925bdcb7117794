"""benchmarks/socket_netdev.py in quick mode (what CI runs): complete JSON
-- both directions at both sizes, frames moved, and on the RX path every
frame the peer wrote received by the guest.  Never a speed: the machine
is shared."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_socket_netdev_quick(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "socket_netdev.py"),
                        "--quick", "--no-live", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    with open(tmp_path / "socket_netdev.json") as f:
        d = json.load(f)
    rows = {(r["path"], r["size"]): r for r in d["summary"]}
    for size in (64, 1518):
        for path in ("emu tx", "emu rx"):
            assert rows[(path, size)]["mpps"] > 0, rows[(path, size)]
        assert rows[("emu rx", size)]["delivered_share"] == 1.0
    assert os.path.getsize(tmp_path / "socket_netdev.png") > 0
