"""`emu bench`: the main job.

Today it runs the ring benchmark (benchmarks/ring_copy.py): two processes,
VM1's driver producing TX packets in one shared memory and VM2's copy loop
moving them into another, with a live display; `--full` runs every size and
burst.  The two-VM vhost-pci run replaces it once the device models land.
"""
from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    if not os.path.exists(path):
        raise SystemExit(f"emu bench: {path} not found (run from a source checkout)")
    spec = importlib.util.spec_from_file_location(f"emu_benchmarks_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--full" in argv:
        argv.remove("--full")
    elif "--quick" not in argv and not any(a in ("-h", "--help") for a in argv):
        argv.append("--quick")
    return _load("ring_copy").main(argv) or 0
