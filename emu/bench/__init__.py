"""``emu bench``: the main job.

Starts VM2 (vhost-pci-net) and VM1 (virtio-net, traffic generator) as
real emu processes sharing memory, runs traffic through VM2's one-copy
loop for a few seconds per frame size with a live display (Mpps, Gbps,
drops and errors per queue, polled over QMP), ``--runs`` times, and
measures the references beside it in the same run: DPDK 22.11 testpmd's
own one-copy path (virtio-user -> vhost, when testpmd is installed) and
hot-cache memcpy of the same size (the ceiling).  Then a summary with
medians and ranges, the machine's load during the run, what that load
does to the figures, a JSON file and a plot.  No QEMU needed.

    emu bench [--sizes 64,1518] [--duration 3] [--runs 3] [--queues 1]
              [--mode poll|interrupt] [--app echo|sink|forward] [--out DIR] [--no-dpdk]
    emu bench ring [...]        the C copy loop alone (benchmarks/ring_copy.py)

Results go to ``./emu-bench-results/`` (never to tracked files) unless
``--out`` says otherwise.  Every VM is stopped on exit, error, Ctrl-C or
SIGTERM.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

from emu.bench.consts import DEFAULT_OUT, PATHS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_benchmark(name: str):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    if not os.path.exists(path):
        raise SystemExit(f"emu bench: {path} not found (run from a source checkout)")
    spec = importlib.util.spec_from_file_location(f"emu_benchmarks_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size list {text!r}") from None
    for s in sizes:
        if not 50 <= s <= 9000:
            raise argparse.ArgumentTypeError(f"frame size {s} not in 50..9000")
    return sizes


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="emu bench",
        description="Inter-VM throughput through vhost-pci: two (or three) emu processes, "
                    "live per-queue counters, summary table and plot.  "
                    "'emu bench ring' runs the ring copy benchmark instead.")
    ap.add_argument("--sizes", type=_sizes, default=[64, 1518],
                    help="frame sizes in bytes, comma separated (default 64,1518; up to 9000)")
    ap.add_argument("--duration", type=float, default=3.0,
                    help="seconds measured per size, after the warm-up (default 3)")
    ap.add_argument("--warmup", type=float, default=0.5,
                    help="seconds before counting (default 0.5)")
    ap.add_argument("--queues", type=int, default=1, help="queue pairs (default 1)")
    ap.add_argument("--mode", choices=("poll", "interrupt"), default="poll",
                    help="guest drivers poll their rings or sleep on interrupts (default poll)")
    ap.add_argument("--app", choices=tuple(PATHS), default="echo",
                    help="VM2's app: " + "; ".join(f"{k}: {v}" for k, v in PATHS.items()))
    ap.add_argument("--burst", type=int, default=None, help="VM1 generator burst (default 32)")
    ap.add_argument("--runs", type=int, default=3,
                    help="runs per size, each with fresh VMs; the summary gives medians and "
                         "ranges (default 3)")
    ap.add_argument("--no-dpdk", action="store_true",
                    help="do not measure DPDK testpmd's one-copy path beside emu")
    ap.add_argument("--out", default=None,
                    help=f"directory for emu_bench.json/.png (default ./{DEFAULT_OUT})")
    ap.add_argument("--no-live", action="store_true", help="plain output, no live display")
    ap.add_argument("--no-pin", action="store_true", help="let the kernel place the VMs")
    return ap


def _console():
    from rich.console import Console
    # a pipe or CI log is not 80 columns of terminal: keep the tables whole
    return Console() if sys.stdout.isatty() else Console(width=150)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ring":
        return _load_benchmark("ring_copy").main(argv[1:]) or 0
    args = parser().parse_args(argv)
    if args.queues < 1 or args.runs < 1:
        raise SystemExit("emu bench: --queues and --runs must be >= 1")
    from emu.bench import report
    from emu.bench.run import run
    console = _console()
    try:
        data = run(args, console, argv)
    except KeyboardInterrupt:
        console.print("interrupted: VMs stopped")
        return 130
    out = args.out or DEFAULT_OUT
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "emu_bench.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    console.print(report.summary_table(data))
    for line in report.notes(data):
        console.print(line)
    png = os.path.join(out, "emu_bench.png")
    try:
        report.plot(data, png)
    except ImportError:
        console.print(f"wrote {path}; no plot: matplotlib is not installed "
                      "(pip install -e '.[bench]', or ./scripts/main.sh which installs it)",
                      markup=False)
    else:
        console.print(f"wrote {path} and {png}  ({data['wall_s']:.1f} s)")
    for p in data["problems"]:
        console.print(f"[yellow]teardown: {p}[/yellow]")
    bad = [r for r in data["summary"] if r["errors"] or not r["balanced"]]
    return 1 if bad or data["problems"] else 0
