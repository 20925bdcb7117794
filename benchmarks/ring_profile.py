"""Instructions per packet, per stage of the data path (callgrind).

One thread runs the whole path the two-process benchmark splits over two
cores: VM1's generator (driver TX: reclaim + post), VM2's copy loop (VM1 TX
chains -> VM2 RX chains, one copy) and VM2's sink (driver RX: receive +
refill), as one :class:`emu.ring.Pump` round after another.  Under
callgrind every instruction is counted exactly, so the per-packet figures
are stable on a noisy machine, unlike timings.

    python benchmarks/ring_profile.py --callgrind [--size 64] [--burst 32]

runs itself under ``valgrind --tool=callgrind`` and prints the table;
``--time S`` instead runs the three stages in one pump thread for S seconds
and reports CPU nanoseconds per packet (CPU time, so other load on the
machine does not count; nothing crosses cores).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MiB = 1 << 20
NUM = 256
STAMP_OFF = 42
# exported entry points -> the stage they stand for (inclusive counts)
STAGES = {
    "emu_drv_tx_gen": "generator: reclaim + post (VM1 driver TX)",
    "emu_dev_copy": "copy: pop, resolve, header, memcpy, used, flush (VM2)",
    "emu_drv_rx_sink": "sink: receive + refill (VM2 driver RX)",
    "emu_pump_once": "whole round (gen + copy + sink + pump)",
}


def run_loop(size: int, burst: int, rounds: int, seconds: float = 0.0) -> dict:
    """gen + copy + sink in one thread: ``rounds`` Python-driven rounds, or
    (``seconds`` > 0) a pump thread for that long, timed by its CPU time."""
    from emu import memory, ring
    from emu.spec import virtio, virtio_net
    from emu.spec.virtio_ring import ring_layout
    from ring_copy import _frame, _layout

    buf, ring_bytes = _layout(size)
    feats = virtio.F_VERSION_1 | virtio_net.F_MRG_RXBUF
    vm1 = memory.allocate(32 * MiB, "shm", name="prof-vm1")
    vm2 = memory.allocate(32 * MiB, "shm", name="prof-vm2")
    try:
        d, a, u, _ = ring_layout(0, NUM)
        txq = ring.DriverQueue(vm1, NUM, d, a, u, ring_bytes, buf, features=feats)
        rxq = ring.DriverQueue(vm2, NUM, d, a, u, ring_bytes, buf, features=feats)
        rxq.rx_refill()
        peer_t, own_t = ring.RegionTable(vm1), ring.RegionTable(vm2)
        peer_tx = ring.DeviceQueue.from_gpa(peer_t, NUM, d, a, u, features=feats)
        local_rx = ring.DeviceQueue.from_gpa(own_t, NUM, d, a, u, features=feats)
        gen = ring.Generator(_frame(size), size, stamp_off=STAMP_OFF, fill=False)
        sink = ring.Sink(stamp_off=STAMP_OFF, verify=False)
        pump = ring.Pump("poll", name="profile")
        pump.add_gen(txq, gen, burst=burst)
        pump.add_copy(peer_tx, local_rx, burst=burst)
        pump.add_sink(rxq, sink, burst=max(burst, 64))
        cpu = 0.0
        if seconds > 0:
            pump.start()
            time.sleep(0.2)
            tid = pump._thread.native_id
            n0, c0 = sink.received, _thread_cpu(tid)
            time.sleep(seconds)
            n1, c1 = sink.received, _thread_cpu(tid)
            pump.stop()
            cpu = c1 - c0
            packets = n1 - n0
        else:
            for _ in range(rounds):
                pump.run_once()
            packets = sink.received
        errors = (txq.stats()["errors"] + rxq.stats()["errors"] +
                  peer_tx.stats()["errors"] + local_rx.stats()["errors"])
        if errors or not 0 < sink.received == peer_tx.stats()["packets"] <= gen.sent:
            raise SystemExit(f"profile loop unbalanced: sent {gen.sent} received "
                             f"{sink.received} errors {errors}")
        return {"packets": packets, "cpu_s": cpu}
    finally:
        vm1.close()
        vm2.close()


def _thread_cpu(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def callgrind(size: int, burst: int, rounds: int) -> dict:
    """Run the loop under callgrind -> packets, inclusive Ir of the entry
    points, self Ir per source function of _ring.c (what was inlined into
    a caller counted where its source is) and per outside function."""
    with tempfile.TemporaryDirectory(prefix="emu-cg-") as d:
        out = os.path.join(d, "cg.out")
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             "--toggle-collect=emu_pump_once", sys.executable, os.path.abspath(__file__),
             "--size", str(size), "--burst", str(burst), "--rounds", str(rounds)],
            capture_output=True, text=True, check=True)
        packets = int(re.search(r"packets (\d+)", p.stdout).group(1))
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", out],
                             capture_output=True, text=True, check=True).stdout
        lines, outside = _self_costs(out)
    incl = {}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(.*?\)\s+\S*?:?(\w+)(?:\s|$)", line)
        if m:
            incl.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    import emu
    src = os.path.join(os.path.dirname(emu.__file__), "_ring.c")
    by_fn: dict[str, int] = {}
    defs = _c_functions(src)
    for lineno, ir in lines.items():
        name = "?"
        for start, fn in defs:
            if start > lineno:
                break
            name = fn
        by_fn[name] = by_fn.get(name, 0) + ir
    return {"packets": packets, "incl": incl, "by_function": by_fn, "outside": outside,
            "annotate": ann}


def _self_costs(path: str) -> tuple[dict, dict]:
    """Self Ir from a callgrind out file: per line of _ring.c, and per
    function for code from any other file (libc's memcpy...)."""
    names: dict[tuple, str] = {}
    lines: dict[int, int] = {}
    outside: dict[str, int] = {}
    fl = cur = fn = ""
    last = 0
    skip_next = False

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)), "")

    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            key, _, rest = line.partition("=")
            if key in ("fl", "fi", "fe", "fn", "cfl", "cfi", "cfn", "ob", "cob") and _:
                kind = "fn" if key in ("fn", "cfn") else ("ob" if key in ("ob", "cob") else "fl")
                v = name(kind, rest)
                if key == "fl":
                    fl = cur = v
                elif key in ("fi", "fe"):
                    cur = v
                elif key == "fn":
                    fn, cur = v, fl
                continue
            if key == "calls" and _:
                skip_next = True
                continue
            if not line or not (line[0].isdigit() or line[0] in "+-*"):
                continue
            parts = line.split()
            pos = parts[0]
            last = last if pos == "*" else (last + int(pos) if pos[0] in "+-" else int(pos))
            if skip_next:                # the inclusive cost of a call: not self
                skip_next = False
                continue
            ir = int(parts[1]) if len(parts) > 1 else 0
            if cur.endswith("emu/_ring.c"):
                lines[last] = lines.get(last, 0) + ir
            else:
                outside[fn] = outside.get(fn, 0) + ir
    return lines, outside


def _c_functions(path: str) -> list[tuple[int, str]]:
    """(first line, name) of every function definition in a C file."""
    pat = re.compile(r"^(?!#|typedef|struct \w+ \{|\s)(?:[\w*\s]*?\s\**)?(\w+)\(")
    out = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = re.sub(r"__attribute__\(\(.*?\)\)", "", line)
            m = pat.match(line)
            if m and not line.rstrip().endswith(";"):
                out.append((i, m.group(1)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--callgrind", action="store_true", help="count instructions per stage")
    ap.add_argument("--time", type=float, default=0.0, metavar="S",
                    help="instead: run the three stages in one pump thread for S seconds "
                         "and report CPU ns per packet")
    ap.add_argument("--annotate", action="store_true", help="also print callgrind_annotate")
    ap.add_argument("--min-ir", type=float, default=0.5,
                    help="hide functions under this many instructions per packet")
    args = ap.parse_args(argv)
    if args.time:
        r = run_loop(args.size, args.burst, 0, args.time)
        print(f"{args.size} B frames, burst {args.burst}: gen + copy + sink on one core, "
              f"{r['cpu_s'] * 1e9 / r['packets']:.1f} ns of CPU per packet "
              f"({r['packets'] / r['cpu_s'] / 1e6:.2f} Mpps per core)")
        return 0
    if not args.callgrind:
        print(f"packets {run_loop(args.size, args.burst, args.rounds)['packets']}")
        return 0
    r = callgrind(args.size, args.burst, args.rounds)
    n = r["packets"]
    print(f"{args.size} B frames, burst {args.burst}, {n} packets, instructions per packet:")
    for fn, what in STAGES.items():
        ir = r["incl"].get(fn)
        print(f"  {ir / n if ir else float('nan'):8.1f}  {fn:18} {what}")
    print("by source function (self, inlined helpers counted in their own source):")
    rows = sorted(list(r["by_function"].items()) +
                  [(f"{k} (outside)", v) for k, v in r["outside"].items()],
                  key=lambda kv: -kv[1])
    for fn, ir in rows:
        if ir / n >= args.min_ir:
            print(f"  {ir / n:8.1f}  {fn}")
    if args.annotate:
        print(r["annotate"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
