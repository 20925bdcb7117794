"""Ring benchmark: the C copy loop alone, across two processes.

Process A plays VM1's driver: it generates packets into its TX ring in
VM1's shared memory.  Process B plays VM2's vhost-pci driver: it maps
VM1's memory from the fd (as the BAR window would), copies every packet
from VM1's TX ring into VM2's own RX ring (one copy) and consumes it.
Each process spins in C on its own core.

Reported per packet size and burst: Mpps and GB/s (median of runs), beside
glibc memcpy of the same size -- hot (64 buffer pairs, in L2) and over the
ring's working set (256 pairs, out of L2 for large frames) -- and DPDK
testpmd's virtio-user -> vhost figure, all measured in the same run.  A run's rate is the median of its
0.25 s slices, as the DPDK figure is the median of testpmd's 1 s Rx-pps
samples; the mean over the whole window is recorded too.  Each run also
records the CPU share the two workers got (1.0 each when nothing else
ran), so a figure taken on a busy machine shows as such, and checks that
the counters balance: every packet generated was copied and received,
no errors.  Writes ``benchmarks/results/ring_copy.json`` and ``ring_copy.png``;
exits 1 if a run had errors or did not balance.

    python benchmarks/ring_copy.py [--quick] [--runs N] [--seconds S] [--no-dpdk]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

MiB = 1 << 20
NUM = 256
STAMP_OFF = 42
SLICE = 0.25            # seconds per rate sample
WARMUP = 0.2            # seconds of traffic before measuring
DRAIN_TIMEOUT = 10.0     # generous: a loaded CI machine must not fake an imbalance
FEATURES_NAME = "VERSION_1|MRG_RXBUF"
QUICK_SIZES, FULL_SIZES = [64, 1518], [64, 256, 1518, 4096, 9000]
QUICK_BURSTS, FULL_BURSTS = [32], [1, 4, 16, 32, 64, 128, 256]
CONTENDED = 0.9         # a worker with less CPU share than this was disturbed


def _frame(size: int) -> bytes:
    """An Ethernet/IPv4/UDP frame of ``size`` bytes (testpmd txonly-like)."""
    import struct
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip_len = size - 14
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 0, 0, 64, 17, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    udp = struct.pack("!HHHH", 9, 9, ip_len - 20, 0)
    return (eth + ip + udp).ljust(size, b"\0")


def _layout(size: int):
    buf = max(2048, (size + 12 + 1023) // 1024 * 1024)
    ring_bytes = 64 * 1024
    return buf, ring_bytes


def _features():
    from emu.spec import virtio, virtio_net
    return virtio.F_VERSION_1 | virtio_net.F_MRG_RXBUF


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _producer(conn, vm1_fd, mem_size, flags):
    """VM1's driver: TX generator on its own core."""
    from emu import memory, ring
    from emu.spec.virtio_ring import ring_layout
    os.sched_setaffinity(0, {1 % os.cpu_count()})
    mem = memory.map_regions([(0, mem_size, 0, 0)], [vm1_fd])
    while True:
        msg = conn.recv()
        if msg is None:
            break
        size, burst = msg
        buf, ring_bytes = _layout(size)
        d, a, u, _ = ring_layout(0, NUM)
        mem.view(0, ring_bytes)[:] = 0
        q = ring.DriverQueue(mem, NUM, d, a, u, ring_bytes, buf, features=_features())
        gen = ring.Generator(_frame(size), size, stamp_off=STAMP_OFF, fill=False)
        pump = ring.Pump("poll", name="vm1-gen")
        pump.add_gen(q, gen, burst=burst)
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
    from emu.spec.virtio_ring import ring_layout
    os.sched_setaffinity(0, {0})
    peer = memory.map_regions([(0, mem_size, 0, 0)], [vm1_fd])
    own = memory.allocate(32 * MiB, "shm", name="vm2")
    peer_t, own_t = ring.RegionTable(peer), ring.RegionTable(own)
    while True:
        msg = conn.recv()
        if msg is None:
            break
        size, burst, seconds, prod_pid = msg
        buf, ring_bytes = _layout(size)
        d, a, u, _ = ring_layout(0, NUM)
        own.view(0, ring_bytes)[:] = 0
        rxq = ring.DriverQueue(own, NUM, d, a, u, ring_bytes, buf, features=_features())
        rxq.rx_refill()
        local_rx = ring.DeviceQueue.from_gpa(own_t, NUM, d, a, u, features=_features())
        conn.send("ready")
        conn.recv()                      # the producer's ring is initialised
        peer_tx = ring.DeviceQueue.from_gpa(peer_t, NUM, d, a, u, features=_features())
        sink = ring.Sink(stamp_off=STAMP_OFF, verify=False)
        pump = ring.Pump("poll", name="vm2-copy")
        pump.add_copy(peer_tx, local_rx, burst=burst)
        pump.add_sink(rxq, sink, burst=max(burst, 64))
        pump.start()
        try:
            out = _measure(sink, rxq, seconds, (prod_pid, os.getpid()), flags)
            # stop the generator, then let the copy loop drain what it posted
            flags["stop_gen"].value = 1
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while not flags["gen_done"].value and time.monotonic() < deadline:
                time.sleep(0.005)
            sent = flags["sent"].value
            while time.monotonic() < deadline and (
                    peer_tx.stats()["packets"] + peer_tx.stats()["drops"] +
                    peer_tx.stats()["errors"] < sent or sink.received < local_rx.stats()["packets"]):
                time.sleep(0.005)
        finally:
            pump.stop()
        flags["received"].value = sink.received
        out.update(received=sink.received, copy_src=peer_tx.stats(),
                   copy_dst=local_rx.stats(), rx=rxq.stats())
        conn.send(out)
    own.close()
    peer.close()


def _measure(sink, rxq, seconds, pids, flags) -> dict:
    """Rate samples of the sink over ``seconds``, after a warm-up."""
    deadline = time.monotonic() + 5.0
    while sink.received == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(WARMUP)
    cpu0 = [cpu_seconds(p) for p in pids]
    t0 = last_t = time.perf_counter()
    n0 = last_n = sink.received
    b0 = rxq.stats()["bytes"]
    slices = []
    while last_t - t0 < seconds - 1e-3:
        time.sleep(max(0.0, min(SLICE, t0 + seconds - last_t)))
        t, n = time.perf_counter(), sink.received
        slices.append((n - last_n) / (t - last_t) / 1e6)
        flags["received"].value = n
        last_t, last_n = t, n
    wall = last_t - t0
    cpu1 = [cpu_seconds(p) for p in pids]
    b1 = rxq.stats()["bytes"]
    return {"mpps": statistics.median(slices), "mpps_mean": (last_n - n0) / wall / 1e6,
            "gbps_mean": (b1 - b0) / wall / 1e9, "slices_mpps": slices, "seconds": wall,
            "cpu_share": [(c1 - c0) / wall for c0, c1 in zip(cpu0, cpu1)]}


class _NoLive:
    """Stands in for rich.live.Live when output is not a terminal."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *_):
        pass


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

    @property
    def received(self) -> int:
        return self.flags["received"].value

    def run(self, size: int, burst: int, seconds: float) -> dict:
        for v in self.flags.values():
            v.value = 0
        self.c_conn.send((size, burst, seconds, self.prod.pid))
        assert self.c_conn.recv() == "ready"
        self.p_conn.send((size, burst))
        assert self.p_conn.recv() == "ready"
        self.c_conn.send("go")
        self.p_conn.send("go")
        c = self.c_conn.recv()
        p = self.p_conn.recv()
        c.update(sent=p["sent"], tx=p["tx"])
        c["gbps"] = c["mpps"] * size / 1e3
        c["balanced"] = balanced(c)
        c["contended"] = min(c["cpu_share"]) < CONTENDED
        return c

    def close(self):
        for conn in (self.p_conn, self.c_conn):
            conn.send(None)
        self.prod.join(5)
        self.cons.join(5)
        self.vm1.close()


def _run_live(bench, size, burst, seconds, live, table) -> dict:
    """One run, the live display showing its rate meanwhile."""
    out = {}
    th = threading.Thread(target=lambda: out.update(bench.run(size, burst, seconds)))
    th.start()
    last_n, last_t = 0, time.perf_counter()
    while th.is_alive():
        th.join(0.25)
        n, t = bench.received, time.perf_counter()
        rate = max(0, n - last_n) / (t - last_t) / 1e6
        last_n, last_t = n, t
        live.update(table((size, burst, rate)))
    return out


def busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def dpdk_run(dp, size: int, seconds: float) -> dict:
    """DPDK's figure, and how much CPU the rest of the machine took meanwhile
    (busy time minus this process and its testpmd children, per core and
    wall second): the counterpart of the emu runs' CPU share."""
    t0, b0, o0 = time.monotonic(), busy_seconds(), os.times()
    mpps = dp.pair_mpps(size, seconds)
    t1, b1, o1 = time.monotonic(), busy_seconds(), os.times()
    ours = sum(o1[:4]) - sum(o0[:4])
    foreign = max(0.0, (b1 - b0) - ours) / ((t1 - t0) * os.cpu_count())
    return {"mpps": mpps, "foreign_cpu": foreign, "contended": foreign > 1 - CONTENDED}


def balanced(r: dict) -> bool:
    """Every packet generated was copied (or counted as a drop) and received,
    and no queue counted an error."""
    src, dst, rx, tx = r["copy_src"], r["copy_dst"], r["rx"], r["tx"]
    errors = tx["errors"] + src["errors"] + dst["errors"] + rx["errors"]
    return (errors == 0 and src["packets"] + src["drops"] == r["sent"] and
            dst["packets"] == src["packets"] == r["received"] == rx["packets"])


def memcpy_gbps(size: int, nbufs: int = 64) -> float:
    """glibc memcpy of ``size`` bytes cycling over ``nbufs`` buffer pairs:
    64 pairs stay in L2 (hot); NUM pairs are the ring's working set, which
    leaves L2 for large frames."""
    from emu import ring
    iters = max(20000, int(2e8 // max(size, 64)))
    ns = min(ring.memcpy_ns(size, iters, nbufs) for _ in range(3))
    return size / ns


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few sizes, short runs (CI, main job)")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--sizes", type=str, default=None, help="comma list of frame sizes")
    ap.add_argument("--bursts", type=str, default=None, help="comma list of burst sizes")
    ap.add_argument("--no-dpdk", action="store_true")
    ap.add_argument("--retries", type=int, default=None,
                    help="repeat a run whose workers got less than 90%% of their cores "
                         "(default 2; 0 with --quick)")
    ap.add_argument("--out", default=None, help="results directory")
    ap.add_argument("--no-live", action="store_true", help="plain output, no live display")
    args = ap.parse_args(argv)

    quick = args.quick
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        (QUICK_SIZES if quick else FULL_SIZES)
    bursts = [int(b) for b in args.bursts.split(",")] if args.bursts else \
        (QUICK_BURSTS if quick else FULL_BURSTS)
    runs = args.runs or 3
    seconds = args.seconds or (1.0 if quick else 3.0)
    main_burst = 32 if 32 in bursts else bursts[-1]
    # bursts are swept at the first size; every size runs at main_burst
    plan = [(sizes[0], b) for b in bursts] + [(s, main_burst) for s in sizes[1:]]

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    console = Console(force_terminal=None if not args.no_live else False,
                      width=None if not args.no_live else 132)
    results: dict = {}

    def table(current=None):
        t = Table(title="emu ring copy: VM1 TX -> (one copy) -> VM2 RX, two processes")
        for c in ("size", "burst", "Mpps (median)", "GB/s", "runs", "contended", "live Mpps"):
            t.add_column(c, justify="right")
        for (s, b), rs in results.items():
            live = f"{current[2]:.2f}" if current and current[:2] == (s, b) else ""
            med = common.median([r["mpps"] for r in rs])
            t.add_row(str(s), str(b), f"{med:.2f}" if med else "-",
                      f"{med * s / 1e3:.2f}" if med else "-", str(len(rs)),
                      str(sum(r["contended"] for r in rs)), live)
        return t

    retries = args.retries if args.retries is not None else (0 if quick else 2)
    bench = Bench()
    rows = []
    try:
        live_cm = _NoLive() if args.no_live else Live(table(), console=console,
                                                      refresh_per_second=8)
        with live_cm as live:
            for rep in range(runs):
                for size, burst in plan:
                    results.setdefault((size, burst), [])
                    for attempt in range(1 + retries):
                        out = _run_live(bench, size, burst, seconds, live, table)
                        rows.append({"size": size, "burst": burst, "run": rep,
                                     "attempt": attempt, **out})
                        if not out["contended"]:
                            break
                    results[(size, burst)].append(out)       # the last attempt counts
                    live.update(table())
    finally:
        bench.close()
    if args.no_live:
        console.print(table())

    memcpy = {s: memcpy_gbps(s) for s in sizes}
    memcpy_ring = {s: memcpy_gbps(s, NUM) for s in sizes}
    dpdk, dpdk_runs = {}, []
    if not args.no_dpdk:
        from emu.testing import dpdk as dp
        if dp.available():
            for s in ([64] if quick else [64, 1518]):
                if s not in sizes:
                    continue
                vals = []
                for rep in range(1 if quick else runs):
                    for attempt in range(1 + retries):
                        r = dpdk_run(dp, s, 4.0 if quick else 6.0)
                        dpdk_runs.append({"size": s, "run": rep, "attempt": attempt, **r})
                        if not r["contended"]:
                            break
                    vals.append(r["mpps"])
                dpdk[s] = common.median(vals)
    summary = summarize(results, main_burst, memcpy, memcpy_ring, dpdk)
    path = common.write_json("ring_copy", {
        "quick": quick, "runs": runs, "seconds": seconds, "slice_seconds": SLICE,
        "queue_size": NUM, "features": FEATURES_NAME, "main_burst": main_burst,
        "rate": "median of a run's 0.25 s slices; summary: median of runs",
        "summary": summary, "raw": rows, "memcpy_gbps": memcpy,
        "memcpy_ring_gbps": memcpy_ring, "dpdk_u2v_mpps": dpdk, "dpdk_runs": dpdk_runs,
        "retries": retries,
        "all_balanced": all(r["balanced"] for r in rows),
        "contended_runs": sum(r["contended"] for rs in results.values() for r in rs),
        "contended_attempts": sum(r["contended"] for r in rows)}, args.out)
    _plot(summary, main_burst, args.out)
    console.print(summary_table(summary, main_burst))
    if dpdk_runs:
        console.print("DPDK runs, share of the machine other processes took: " +
                      ", ".join(f"{r['size']} B {r['foreign_cpu']:.0%}" for r in dpdk_runs))
    console.print(f"wrote {path}")
    bad = [r for r in rows if not r["balanced"]]
    for r in bad:
        console.print(f"[red]unbalanced or errors[/red]: size {r['size']} burst {r['burst']} "
                      f"run {r['run']}: sent {r['sent']} copied {r['copy_src']['packets']} "
                      f"received {r['received']} errors {r['copy_src']['errors']}")
    return 1 if bad else 0


def summarize(results, main_burst, memcpy, memcpy_ring, dpdk) -> list[dict]:
    summary = []
    for (s, b), rs in results.items():
        med = common.median([r["mpps"] for r in rs])
        entry = {"size": s, "burst": b, "mpps_median": med,
                 "mpps_runs": [r["mpps"] for r in rs],
                 "mpps_mean_runs": [r["mpps_mean"] for r in rs],
                 "gbps_median": med * s / 1e3,
                 "cpu_share_min": min(min(r["cpu_share"]) for r in rs),
                 "contended_runs": sum(r["contended"] for r in rs)}
        if b == main_burst:
            entry["memcpy_gbps"] = memcpy[s]
            entry["share_of_memcpy"] = entry["gbps_median"] / memcpy[s]
            entry["memcpy_ring_gbps"] = memcpy_ring[s]
            entry["share_of_memcpy_ring"] = entry["gbps_median"] / memcpy_ring[s]
            if dpdk.get(s):
                entry["dpdk_mpps"] = dpdk[s]
                entry["ratio_vs_dpdk"] = med / dpdk[s]
        summary.append(entry)
    return summary


def summary_table(summary, main_burst):
    from rich.table import Table
    t = Table(title="summary (same run)")
    for c in ("size", "burst", "Mpps", "GB/s", "hot memcpy", "share", "ring memcpy",
              "share", "DPDK Mpps", "vs DPDK", "CPU share"):
        t.add_column(c, justify="right")
    for e in summary:
        if e["burst"] != main_burst:
            continue
        t.add_row(str(e["size"]), str(e["burst"]), f"{e['mpps_median']:.2f}",
                  f"{e['gbps_median']:.2f}", f"{e['memcpy_gbps']:.1f}",
                  f"{e['share_of_memcpy']:.0%}", f"{e['memcpy_ring_gbps']:.1f}",
                  f"{e['share_of_memcpy_ring']:.0%}",
                  f"{e['dpdk_mpps']:.2f}" if "dpdk_mpps" in e else "-",
                  f"{e['ratio_vs_dpdk']:.2f}x" if "ratio_vs_dpdk" in e else "-",
                  f"{e['cpu_share_min']:.2f}")
    return t


def _plot(summary, main_burst, out_dir):
    plt = common.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    by_size = sorted((e for e in summary if e["burst"] == main_burst), key=lambda e: e["size"])
    xs = [e["size"] for e in by_size]
    a1.plot(xs, [e["gbps_median"] for e in by_size], "o-", label="emu copy loop")
    a1.plot(xs, [e["memcpy_gbps"] for e in by_size], "s--", label="hot memcpy (64 pairs)")
    if all("memcpy_ring_gbps" in e for e in by_size):
        a1.plot(xs, [e["memcpy_ring_gbps"] for e in by_size], "d:",
                label=f"memcpy over {NUM} pairs")
    dp = [(e["size"], e["dpdk_mpps"] * e["size"] / 1e3) for e in by_size if "dpdk_mpps" in e]
    if dp:
        a1.plot(*zip(*dp), "^", label="DPDK virtio-user->vhost")
    a1.set_xscale("log")
    a1.set_xlabel("frame bytes")
    a1.set_ylabel("GB/s")
    a1.legend()
    a1.set_title(f"throughput (burst {main_burst})")
    first = by_size[0]["size"] if by_size else 64
    by_burst = sorted((e for e in summary if e["size"] == first), key=lambda e: e["burst"])
    a2.plot([e["burst"] for e in by_burst], [e["mpps_median"] for e in by_burst], "o-")
    a2.set_xscale("log", base=2)
    a2.set_xlabel("burst")
    a2.set_ylabel("Mpps")
    a2.set_title(f"{first} B frames vs burst")
    fig.tight_layout()
    path = common.plot_path("ring_copy", out_dir)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
