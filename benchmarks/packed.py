"""Packed vs split rings, in the same run: the one-copy path of vhost-pci
(VM1's driver and VM2's copy loop as two processes on shared memory, as
``ring_copy.py``) with VM1's TX ring and VM2's RX ring split, packed, or
one of each, beside DPDK testpmd's own one-copy figure with packed rings
(``net_virtio_user ...,packed_vq=1`` txonly -> ``net_vhost`` rxonly) and
with split ones.

Formats are interleaved run by run (split, packed, then the mixed pairs),
so drift on this shared machine hits all of them alike.  Each figure is
the median of its runs, with the minimum and maximum beside it; a run's
rate is the median of its 0.25 s slices (testpmd's: of its 1 s Rx-pps
lines).  Every run checks that the counters balance (generated == copied
== received, no errors) and records the CPU share the two workers got.
Writes ``benchmarks/results/packed.json`` and ``packed.png``.

    python benchmarks/packed.py [--quick] [--runs N] [--seconds S] [--sizes 64,1518] [--no-dpdk]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import ring_copy as rc  # noqa: E402

MiB = 1 << 20
NUM = rc.NUM
BURST = 32
#: (VM1 TX ring, VM2 RX ring) formats; the first two are the comparison
FORMATS = (("split", "split"), ("packed", "packed"), ("packed", "split"), ("split", "packed"))


def _features(fmt: str) -> int:
    from emu.spec import virtio
    return rc._features() | (virtio.F_RING_PACKED if fmt == "packed" else 0)


def _rings(fmt: str):
    from emu.spec import virtio_ring, virtio_ring_packed
    return (virtio_ring_packed if fmt == "packed" else virtio_ring).ring_layout(0, NUM)[:3]


def _producer(conn, vm1_fd, mem_size, flags):
    """VM1's driver: TX generator on its own core."""
    from emu import memory, ring
    os.sched_setaffinity(0, {1 % os.cpu_count()})
    mem = memory.map_regions([(0, mem_size, 0, 0)], [vm1_fd])
    while True:
        msg = conn.recv()
        if msg is None:
            break
        size, fmt = msg
        buf, ring_bytes = rc._layout(size)
        mem.view(0, ring_bytes)[:] = 0
        q = ring.DriverQueue(mem, NUM, *_rings(fmt), ring_bytes, buf, features=_features(fmt))
        gen = ring.Generator(rc._frame(size), size, stamp_off=rc.STAMP_OFF, fill=False)
        pump = ring.Pump("poll", name="vm1-gen")
        pump.add_gen(q, gen, burst=BURST)
        conn.send("ready")
        conn.recv()                      # go
        pump.start()
        while not flags["stop_gen"].value:
            time.sleep(0.01)
        pump.stop()
        flags["sent"].value = gen.sent
        flags["gen_done"].value = 1
        conn.send({"sent": gen.sent, "tx": q.stats()})
    mem.close()


def _consumer(conn, vm1_fd, mem_size, flags):
    """VM2's driver: VM1 TX -> VM2 RX copy loop plus VM2's own RX consumer."""
    from emu import memory, ring
    os.sched_setaffinity(0, {0})
    peer = memory.map_regions([(0, mem_size, 0, 0)], [vm1_fd])
    own = memory.allocate(32 * MiB, "shm", name="vm2")
    peer_t, own_t = ring.RegionTable(peer), ring.RegionTable(own)
    while True:
        msg = conn.recv()
        if msg is None:
            break
        size, tx_fmt, rx_fmt, seconds, prod_pid = msg
        buf, ring_bytes = rc._layout(size)
        own.view(0, ring_bytes)[:] = 0
        rxf = _features(rx_fmt)
        rxq = ring.DriverQueue(own, NUM, *_rings(rx_fmt), ring_bytes, buf, features=rxf)
        rxq.rx_refill()
        local_rx = ring.DeviceQueue.from_gpa(own_t, NUM, *_rings(rx_fmt), features=rxf)
        conn.send("ready")
        conn.recv()                      # the producer's ring is initialised
        peer_tx = ring.DeviceQueue.from_gpa(peer_t, NUM, *_rings(tx_fmt),
                                            features=_features(tx_fmt))
        sink = ring.Sink(stamp_off=rc.STAMP_OFF, verify=False)
        pump = ring.Pump("poll", name="vm2-copy")
        pump.add_copy(peer_tx, local_rx, burst=BURST)
        pump.add_sink(rxq, sink, burst=64)
        pump.start()
        try:
            out = rc._measure(sink, rxq, seconds, (prod_pid, os.getpid()), flags)
            flags["stop_gen"].value = 1
            deadline = time.monotonic() + rc.DRAIN_TIMEOUT
            while not flags["gen_done"].value and time.monotonic() < deadline:
                time.sleep(0.005)
            sent = flags["sent"].value
            while time.monotonic() < deadline and (
                    peer_tx.stats()["packets"] + peer_tx.stats()["drops"] +
                    peer_tx.stats()["errors"] < sent or sink.received < local_rx.stats()["packets"]):
                time.sleep(0.005)
        finally:
            pump.stop()
        out.update(received=sink.received, copy_src=peer_tx.stats(),
                   copy_dst=local_rx.stats(), rx=rxq.stats())
        conn.send(out)
    own.close()
    peer.close()


class Bench:
    """The two worker processes, kept across measurements."""

    def __init__(self):
        from emu import memory
        self.mem_size = 64 * MiB
        self.vm1 = memory.allocate(self.mem_size, "shm", name="vm1")
        ctx = mp.get_context("fork")
        self.flags = {"stop_gen": ctx.Value("i", 0, lock=False),
                      "gen_done": ctx.Value("i", 0, lock=False),
                      "sent": ctx.Value("q", 0, lock=False),
                      "received": ctx.Value("q", 0, lock=False)}
        self.p_conn, pc = ctx.Pipe()
        self.c_conn, cc = ctx.Pipe()
        fd = self.vm1.regions[0].fd
        self.prod = ctx.Process(target=_producer, args=(pc, os.dup(fd), self.mem_size,
                                                        self.flags), daemon=True)
        self.cons = ctx.Process(target=_consumer, args=(cc, os.dup(fd), self.mem_size,
                                                        self.flags), daemon=True)
        self.prod.start()
        self.cons.start()

    def run(self, size: int, tx_fmt: str, rx_fmt: str, seconds: float) -> dict:
        for v in self.flags.values():
            v.value = 0
        self.c_conn.send((size, tx_fmt, rx_fmt, seconds, self.prod.pid))
        assert self.c_conn.recv() == "ready"
        self.p_conn.send((size, tx_fmt))
        assert self.p_conn.recv() == "ready"
        self.c_conn.send("go")
        self.p_conn.send("go")
        c = self.c_conn.recv()
        p = self.p_conn.recv()
        c.update(sent=p["sent"], tx=p["tx"])
        c["gbps"] = c["mpps"] * size / 1e3
        c["balanced"] = rc.balanced(c)
        c["contended"] = min(c["cpu_share"]) < rc.CONTENDED
        return c

    def close(self):
        for conn in (self.p_conn, self.c_conn):
            conn.send(None)
        self.prod.join(5)
        self.cons.join(5)
        self.vm1.close()


def spread(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    return {"median": common.median(xs), "min": min(xs) if xs else None,
            "max": max(xs) if xs else None, "runs": xs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short run per figure (CI)")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 5)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per run (default 3)")
    ap.add_argument("--sizes", default="64,1518")
    ap.add_argument("--no-dpdk", action="store_true")
    ap.add_argument("--retries", type=int, default=None,
                    help="repeat a run whose workers got less than 90%% of their cores "
                         "(default 2; 0 with --quick)")
    ap.add_argument("--out", default=None, help="results directory")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = args.runs or (1 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)

    rows = []
    bench = Bench()
    try:
        for rep in range(runs):
            for size in sizes:
                for tx_fmt, rx_fmt in FORMATS:
                    for attempt in range(1 + retries):
                        out = bench.run(size, tx_fmt, rx_fmt, seconds)
                        rows.append({**out, "size": size, "tx_fmt": tx_fmt, "rx_fmt": rx_fmt,
                                     "run": rep, "attempt": attempt})
                        print(f"run {rep} {size:5d} B {tx_fmt:>6} -> {rx_fmt:<6} "
                              f"{out['mpps']:6.2f} Mpps  cpu {min(out['cpu_share']):.2f}"
                              f"{'' if out['balanced'] else '  UNBALANCED'}", flush=True)
                        if not out["contended"]:
                            break
    finally:
        bench.close()

    dpdk_rows = []
    if not args.no_dpdk:
        from emu.testing import dpdk as dp
        if dp.available():
            for rep in range(runs):
                for size in sizes:
                    for fmt, devargs in (("split", ""), ("packed", ",packed_vq=1")):
                        for attempt in range(1 + retries):
                            t0, b0, o0 = time.monotonic(), rc.busy_seconds(), os.times()
                            r = dp.one_copy(size, 2.0 if args.quick else 4.0, "u2v",
                                            devargs_vu=devargs)
                            t1, b1, o1 = time.monotonic(), rc.busy_seconds(), os.times()
                            foreign = max(0.0, (b1 - b0) - (sum(o1[:4]) - sum(o0[:4]))) / \
                                ((t1 - t0) * os.cpu_count())
                            dpdk_rows.append({"size": size, "format": fmt, "run": rep,
                                              "attempt": attempt, "mpps": r["mpps"],
                                              "foreign_cpu": foreign,
                                              "contended": foreign > 1 - rc.CONTENDED})
                            print(f"run {rep} {size:5d} B DPDK {fmt:>6} {r['mpps']:6.2f} Mpps",
                                  flush=True)
                            if not dpdk_rows[-1]["contended"]:
                                break

    # the last attempt of each run counts
    def last(rs, key):
        out = {}
        for r in rs:
            out[key(r)] = r
        return list(out.values())
    emu_runs = last(rows, lambda r: (r["size"], r["tx_fmt"], r["rx_fmt"], r["run"]))
    dpdk_runs = last(dpdk_rows, lambda r: (r["size"], r["format"], r["run"]))
    summary = []
    for size in sizes:
        for tx_fmt, rx_fmt in FORMATS:
            rs = [r for r in emu_runs
                  if (r["size"], r["tx_fmt"], r["rx_fmt"]) == (size, tx_fmt, rx_fmt)]
            summary.append({"size": size, "path": f"emu {tx_fmt} -> {rx_fmt}", "tx_fmt": tx_fmt,
                            "rx_fmt": rx_fmt, "mpps": spread([r["mpps"] for r in rs]),
                            "gbps": spread([r["gbps"] for r in rs]),
                            "cpu_share_min": min(min(r["cpu_share"]) for r in rs),
                            "contended_runs": sum(r["contended"] for r in rs),
                            "balanced": all(r["balanced"] for r in rs)})
        for fmt in ("split", "packed"):
            rs = [r for r in dpdk_runs if (r["size"], r["format"]) == (size, fmt)]
            if rs:
                summary.append({"size": size, "path": f"DPDK testpmd {fmt}", "format": fmt,
                                "mpps": spread([r["mpps"] for r in rs]),
                                "contended_runs": sum(r["contended"] for r in rs)})
    ratios = []
    for size in sizes:
        by = {e["path"]: e["mpps"]["median"] for e in summary if e["size"] == size}
        ratios.append({"size": size,
                       "packed_over_split": by["emu packed -> packed"] / by["emu split -> split"],
                       "packed_vs_dpdk_packed": (by["emu packed -> packed"] /
                                                 by["DPDK testpmd packed"])
                       if by.get("DPDK testpmd packed") else None,
                       "dpdk_packed_over_split": (by["DPDK testpmd packed"] /
                                                  by["DPDK testpmd split"])
                       if by.get("DPDK testpmd split") else None})
    path = common.write_json("packed", {
        "quick": args.quick, "runs": runs, "seconds": seconds, "queue_size": NUM,
        "burst": BURST, "features": rc.FEATURES_NAME, "sizes": sizes,
        "rate": "median of a run's 0.25 s slices (testpmd: of its 1 s lines); "
                "summary: median of runs, with min and max",
        "command": "python benchmarks/packed.py" + (" --quick" if args.quick else ""),
        "summary": summary, "ratios": ratios, "raw": rows, "dpdk_raw": dpdk_rows,
        "all_balanced": all(r["balanced"] for r in rows)}, args.out)
    _plot(summary, sizes, args.out)
    for r in ratios:
        print(f"{r['size']} B: packed/split {r['packed_over_split']:.2f}x"
              + (f", emu packed / DPDK packed {r['packed_vs_dpdk_packed']:.2f}x"
                 if r["packed_vs_dpdk_packed"] else ""))
    print(f"wrote {path}")
    return 0 if all(r["balanced"] for r in rows) else 1


def _plot(summary, sizes, out_dir):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        es = [e for e in summary if e["size"] == size]
        names = [e["path"].replace("DPDK testpmd ", "DPDK ").replace("emu ", "") for e in es]
        med = [e["mpps"]["median"] for e in es]
        err = [[m - e["mpps"]["min"] for m, e in zip(med, es)],
               [e["mpps"]["max"] - m for m, e in zip(med, es)]]
        colors = ["tab:blue" if e["path"].startswith("emu") else "tab:gray" for e in es]
        ax.bar(range(len(es)), med, yerr=err, capsize=4, color=colors)
        ax.set_xticks(range(len(es)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("Mpps (median, min-max)")
        ax.set_title(f"one-way one copy, {size} B")
    fig.tight_layout()
    path = common.plot_path("packed", out_dir)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
