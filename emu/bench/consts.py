"""What the main job measures and where it writes (shared by its modules)."""
from __future__ import annotations

#: the results directory, relative to where emu bench runs: never tracked files
DEFAULT_OUT = "emu-bench-results"
DPDK_MAX = 1518          # testpmd txonly sends one 2 KiB mbuf per frame

PATHS = {
    "echo": "VM1 gen -> VM2 echo (one copy) -> VM1",
    "sink": "VM1 gen -> VM2 sink (one copy into VM2's RX)",
    "forward": "VM1 gen -> VM2 forward (one copy) -> VM3 sink",
}
