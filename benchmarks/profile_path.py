"""Where the time goes in the process-level path: ``perf record`` on every
emu VM process while traffic runs, top symbols per process.

Starts the same VMs as ``emu bench`` (VM1 gen -> VM2 echo|sink|forward),
runs traffic of one frame size, samples each VM process for --seconds
(call graphs off: the C loop is flat), and writes the share of samples
per (shared object, symbol) for each VM plus the packet rate measured
over the same window.  Diagnostic, not a figure: perf itself costs a few
percent.  Needs ``perf`` (linux-perf) and permission to sample.

Writes results/profile_path.json.
    python benchmarks/profile_path.py [--size 64] [--app echo] [--seconds 3] [--top 12]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
import common  # noqa: E402


def top_symbols(data: str, top: int) -> list[dict]:
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym",
                          "--stdio", "-g", "none", "--percent-limit", "0.5"],
                         capture_output=True, text=True, timeout=120).stdout
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line.split()[0]:
            continue
        pct, dso, *rest = line.split()
        sym = " ".join(rest).replace("[.] ", "").replace("[k] ", "")
        rows.append({"percent": float(pct.rstrip("%")), "dso": dso, "symbol": sym})
    return rows[:top]


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--app", default="echo", choices=("echo", "sink", "forward"))
    ap.add_argument("--mode", default="poll", choices=("poll", "interrupt"))
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    if not shutil.which("perf"):
        print("profile_path: perf not installed (apt-get install linux-perf)")
        return 2
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    from rich.markup import escape

    from emu.testing import procs, traffic
    con = _util.console(args.no_live)
    with procs.signals_raise(), procs.Fleet() as fleet, \
            tempfile.TemporaryDirectory(prefix="emu-perf-") as tmp:
        topo = traffic.Topology(fleet, args.app, mode=args.mode,
                                max_size=max(args.size, 1518)).start()
        topo.start_traffic(args.size)
        time.sleep(1.0)
        s0 = topo.snapshot()
        perfs = {vm.name: subprocess.Popen(
            procs.command(["perf", "record", "-F", "1999", "-o", os.path.join(tmp, vm.name),
                           "-p", str(vm.pid), "--", "sleep", str(seconds)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for vm in topo.vms}
        for p in perfs.values():
            p.wait(timeout=seconds + 60)
        s1 = topo.snapshot()
        topo.stop_traffic()
        rate = s1.rate(s0)
        profiles = {name: top_symbols(os.path.join(tmp, name), args.top) for name in perfs}
    path = common.write_json("profile_path", {
        "size": args.size, "app": args.app, "mode": args.mode, "seconds": seconds,
        "mpps_while_sampled": rate["mpps"], "cpu_s": rate["cpu_s"], "profiles": profiles}, args.out)
    con.print(f"{args.app} {args.size} B {args.mode}: {rate['mpps']:.2f} Mpps while sampled")
    for name, rows in profiles.items():
        con.print(f"[bold]{name}[/bold]")
        for r in rows:
            con.print(escape(f"  {r['percent']:6.2f}%  {r['dso']:<24} {r['symbol']}"))
    con.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
