"""Control plane and scale: how fast an emu VM is up, how fast two of them
pass their first packet, and how many pairs one machine carries.

* **start-up beside QEMU 7.2** (benchmarks/startup.py): exec -> QMP
  greeting and exec -> first answered ``query-status``, for the default
  machine and a full VM2, over a unix-socket ``-qmp`` and a
  QEMUMachine-style socketpair, QEMU measured in the same run; and
  ``QEMUMachine.launch()`` for both.
* **handshake -> first packet**: VM2 (echo) listening; VM1 (gen) starts
  with a ``wait=on`` monitor so its machine starts when we say so; times
  from that release to VM1's VHOST_USER_CONNECTED event and to the first
  echoed packet seen in VM1's counters (QMP polled every ~1 ms).
* **scale**: 1..16 VM pairs at once (VM1 gen <-> VM2 echo, 64 B, 64 MiB
  RAM each): aggregate Mpps, and RSS per VM process (VmRSS, split into
  anonymous and shared -- guest RAM is shared memory) from /proc.  On 2
  cores, polling pairs share cores by time slices; interrupt mode (the
  default here) lets idle loops sleep.

Writes results/control_plane.json and control_plane.png.
    python benchmarks/control_plane.py [--quick] [--runs N] [--pairs 1,2,4,8,16]
                                       [--scale-mode interrupt|poll]
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
import common  # noqa: E402

import startup as startup_bench  # noqa: E402


# -- handshake to first packet ----------------------------------------------------------------

def first_packet(status) -> dict:
    from emu.testing import launch, procs
    with procs.Fleet(prefix="emu-cp-") as fleet:
        sock, hold = fleet.path("vp.sock"), fleet.path("hold.qmp")
        vm2 = fleet.emu(procs.vhost_pci_args([sock], "echo"), name="vm2", cpus=fleet.cpus(0))
        fleet.wait_socket(sock, vm2)
        t_spawn = time.time()
        vm1 = fleet.emu(procs.virtio_net_args(sock, "gen", {"size": 64, "count": 0},
                                              wait_qmp=hold),
                        name="vm1", cpus=fleet.cpus(1))
        t_qmp = time.time()
        launch.wait_for_path(hold, vm1)
        with launch.monitor_client(hold) as release:
            t0 = time.time()
            release.connect()            # the machine starts now
            while True:
                g = vm1.cmd("query-emu-stats").get("guest", {})
                if g.get("received", 0) > 0:
                    t_first = time.time()
                    break
                if time.time() - t0 > 30:
                    raise RuntimeError(f"no packet 30 s after VM1 started: {g}")
                time.sleep(0.001)
        ev = vm1.event_wait("VHOST_USER_CONNECTED", 5.0)
        t_conn = ev["timestamp"]["seconds"] + ev["timestamp"]["microseconds"] / 1e6
    r = {"spawn_to_qmp_ms": (t_qmp - t_spawn) * 1e3,
         "start_to_connected_ms": (t_conn - t0) * 1e3,
         "connected_to_first_packet_ms": (t_first - t_conn) * 1e3,
         "start_to_first_packet_ms": (t_first - t0) * 1e3}
    status.note(f"VM1 start -> connected {r['start_to_connected_ms']:.1f} ms -> first echoed "
                f"packet {r['connected_to_first_packet_ms']:.1f} ms (total "
                f"{r['start_to_first_packet_ms']:.1f} ms)")
    return r


# -- scale -----------------------------------------------------------------------------------------

def scale(status, n: int, mode: str, seconds: float, warmup: float) -> dict:
    from emu.testing import procs, traffic
    with procs.Fleet(prefix="emu-cp-") as fleet:
        t0 = time.monotonic()
        topos = []
        for i in range(n):
            status.set(f"scale: starting pair {i + 1}/{n} ({mode})")
            topos.append(traffic.Topology(fleet, "echo", mode=mode, max_size=64, ram="64M",
                                          tag=f"p{i}-").start())
        started = time.monotonic() - t0
        pre = [t.snapshot() for t in topos]
        for t in topos:
            t.start_traffic(64)
        deadline = time.monotonic() + 30
        while any(t.snapshot().received == p.received for t, p in zip(topos, pre)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"scale {n}: some pair never passed traffic")
            time.sleep(0.05)
        time.sleep(warmup)
        s0 = [t.snapshot() for t in topos]
        status.set(f"scale: {n} pairs ({mode}), measuring {seconds:.1f} s")
        time.sleep(seconds)
        s1 = [t.snapshot() for t in topos]
        mem = {vm.name: procs.memory_kib(vm.pid) for t in topos for vm in t.vms}
        for t in topos:
            t.stop_traffic()
        done = [t.settle(p) for t, p in zip(topos, pre)]
    rates = [b.rate(a) for a, b in zip(s0, s1)]
    bal = [d.balance(p) for d, p in zip(done, pre)]
    per_pair = [r["mpps"] for r in rates]
    rss = {role: sorted(m["VmRSS"] for k, m in mem.items() if k.endswith(role))
           for role in ("vm1", "vm2")}
    r = {"pairs": n, "mode": mode, "started_s": started, "mpps": sum(per_pair),
         "per_pair_mpps": per_pair, "cpu_s": sum(x["cpu_s"] for x in rates),
         "window_s": _util.median([x["window_s"] for x in rates]),
         "rss_kib": mem, "rss_median_kib": {k: _util.median(v) for k, v in rss.items()},
         **{k: sum(b[k] for b in bal) for k in ("sent", "received", "drops", "errors")},
         "balanced": all(b["balanced"] for b in bal)}
    status.note(f"scale {n:2d} pairs ({mode}): {r['mpps']:.2f} Mpps aggregate, started in "
                f"{started:.1f} s, RSS VM1 {r['rss_median_kib']['vm1'] / 1024:.0f} MiB, "
                f"VM2 {r['rss_median_kib']['vm2'] / 1024:.0f} MiB")
    _util.settle_machine()
    return r


def table(data):
    from rich.table import Table
    t1 = startup_bench.table(data["startup"])
    fp = data["first_packet"]["median"]
    t1.add_row("VM1 start -> first echoed packet", "", "", "", "", "",
               f"{fp['start_to_first_packet_ms']:.1f}", "", "", "",
               f"(connected at {fp['start_to_connected_ms']:.1f})")
    t2 = Table(title="scale: VM pairs at once (64 B echo)", title_justify="left")
    for c in ("pairs", "mode", "aggregate Mpps", "min pair", "max pair", "RSS VM1 MiB",
              "RSS VM2 MiB", "start s", "balanced"):
        t2.add_column(c, justify="right")
    for r in data["scale"]:
        t2.add_row(str(r["pairs"]), r["mode"], f"{r['mpps']:.2f}", f"{min(r['per_pair_mpps']):.2f}",
                   f"{max(r['per_pair_mpps']):.2f}", f"{r['rss_median_kib']['vm1'] / 1024:.0f}",
                   f"{r['rss_median_kib']['vm2'] / 1024:.0f}", f"{r['started_s']:.1f}",
                   "yes" if r["balanced"] and not r["errors"] else "NO")
    return t1, t2


def plot(data, out_dir):
    plt = common.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    cases = data["startup"]["cases"]
    names = list(cases)
    ys = range(len(names))
    for dy, metric, color in ((-0.2, "greeting", "tab:cyan"), (0.2, "query-status", "tab:blue")):
        a1.barh([y + dy for y in ys], [cases[n][metric]["emu_ms"] for n in names], height=0.35,
                color=color, label=f"emu exec -> {metric}")
        q = [(y + dy, cases[n][metric]["qemu_ms"]) for y, n in zip(ys, names)
             if cases[n][metric]["qemu_ms"]]
        if q:
            a1.plot([v for _, v in q], [y for y, _ in q], "^k", ms=6,
                    label="QEMU 7.2, same run" if metric == "greeting" else None)
    a1.set_yticks(list(ys), [n.replace(" (", "\n(") for n in names], fontsize=6)
    a1.set_xlabel("ms (median)")
    a1.legend(fontsize=6)
    a1.set_title("start-up beside QEMU")
    for mode in sorted({r["mode"] for r in data["scale"]}):
        rs = [r for r in data["scale"] if r["mode"] == mode]
        a2.plot([r["pairs"] for r in rs], [r["mpps"] for r in rs], "o-",
                label=f"aggregate Mpps ({mode})")
    a2.set_xscale("log", base=2)
    a2.set_xlabel("VM pairs")
    a2.set_ylabel("Mpps")
    a3 = a2.twinx()
    rs = data["scale"]
    a3.plot([r["pairs"] for r in rs], [r["rss_median_kib"]["vm2"] / 1024 for r in rs], "s--",
            color="tab:gray", label="RSS per VM2 (MiB)")
    a3.set_ylabel("MiB")
    a3.set_ylim(0, max(r["rss_median_kib"]["vm2"] for r in rs) / 1024 * 1.3)
    a2.legend(loc="upper left", fontsize=7)
    a3.legend(loc="upper right", fontsize=7)
    a2.set_title("pairs at once on this machine")
    fig.tight_layout()
    path = common.plot_path("control_plane", out_dir)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    ap.add_argument("--pairs", default=None, help="pair counts for the scale test (1,2,4,8,16)")
    ap.add_argument("--scale-mode", default="interrupt", choices=("interrupt", "poll"))
    args = ap.parse_args(argv)
    q = args.quick
    runs = args.runs or (2 if q else 10)
    pairs = [int(x) for x in args.pairs.split(",")] if args.pairs else ([1, 2] if q else
                                                                      [1, 2, 4, 8, 16])
    seconds = args.seconds or (1.0 if q else 3.0)
    from emu.testing import procs
    con = _util.console(args.no_live)
    with procs.signals_raise(), _util.Status(con, "control plane and scale", args.no_live) as st:
        start = startup_bench.measure(st, runs)
        fps = [first_packet(st) for _ in range(runs if not q else 1)]
        sc = [scale(st, n, args.scale_mode, seconds, 0.3 if q else 0.5) for n in pairs]
    fp_med = {k: _util.median([f[k] for f in fps]) for k in fps[0]}
    data = {"startup": start, "first_packet": {"median": fp_med, "runs": fps}, "scale": sc}
    path = common.write_json("control_plane", {"quick": q, "runs": runs, "seconds": seconds,
                                               **data}, args.out)
    png = plot(data, args.out)
    for t in table(data):
        con.print(t)
    con.print(f"wrote {path} and {png}")
    bad = [r for r in sc if r["errors"] or not r["balanced"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
