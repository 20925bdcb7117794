"""benchmarks/packed.py in quick mode, as CI runs it: every format pair
and size present, the counters balanced, DPDK's split and packed_vq=1
references measured beside emu's figures, the plot written.  Never that a
speed was reached: this machine is shared."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from emu.testing import dpdk

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_packed_benchmark_quick_is_complete_and_balanced(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "packed.py"), "--quick",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    with open(tmp_path / "packed.json") as f:
        d = json.load(f)
    assert os.path.getsize(tmp_path / "packed.png") > 0
    assert d["all_balanced"] is True and d["sizes"] == [64, 1518]
    paths = {(e["path"], e["size"]) for e in d["summary"]}
    emu = {f"emu {a} -> {b}" for a in ("split", "packed") for b in ("split", "packed")}
    refs = {"DPDK testpmd split", "DPDK testpmd packed"} if dpdk.available() else set()
    assert paths == {(n, s) for n in emu | refs for s in (64, 1518)}
    for e in d["summary"]:
        m = e["mpps"]
        assert 0 < m["min"] <= m["median"] <= m["max"] and len(m["runs"]) == d["runs"]
    for r in d["raw"]:
        assert r["balanced"] and r["sent"] > 0 and r["received"] == r["copy_dst"]["packets"]
        assert r["tx"]["errors"] == r["rx"]["errors"] == r["copy_src"]["errors"] == 0
    for r in d["ratios"]:
        assert r["packed_over_split"] > 0
        assert (r["packed_vs_dpdk_packed"] is not None) == dpdk.available()
