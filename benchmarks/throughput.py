"""vhost-pci one copy between emu processes, beside DPDK and memcpy.

emu VM1 (virtio-net, gen) -> emu VM2 (vhost-pci-net, echo: VM1's TX copied
straight into VM1's RX through the BAR window, one copy) -> VM1, for every
frame size and configuration (queue pairs x poll/interrupt).  References
measured in the same run: DPDK 22.11's own one-copy path (testpmd
net_virtio_user txonly -> testpmd net_vhost rxonly) and hot-cache memcpy of
the same size (the ceiling).  emu and testpmd runs alternate, so both see
the same machine load; figures are medians over --runs.

Counted from outside (QMP query-emu-stats, /proc): Mpps and Gbit/s at the
receiver, CPU ns per packet of all processes, and per size the counter
balance once traffic stopped (sent == received + drops, no errors).

Writes results/throughput.json and throughput.png.
    python benchmarks/throughput.py [--quick] [--runs N] [--seconds S] [--sizes 64,1518]
                                    [--configs 1:poll,2:interrupt,1:poll:sink] [--no-dpdk]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
import common  # noqa: E402

FULL_SIZES = [64, 256, 512, 1024, 1518, 4096, 9000]
QUICK_SIZES = [64, 1518]
# (queue pairs, mode, VM2 app); sink: VM1 only generates, VM2 copies into its
# own RX and consumes -- the split of work of DPDK's txonly -> rxonly pair
FULL_CONFIGS = [(1, "poll", "echo"), (1, "interrupt", "echo"), (2, "poll", "echo"),
                (2, "interrupt", "echo"), (1, "poll", "sink")]
QUICK_CONFIGS = [(1, "poll", "echo"), (1, "interrupt", "echo"), (2, "poll", "echo"),
                 (1, "poll", "sink")]
DPDK_MAX = 1518          # testpmd txonly: one 2 KiB mbuf per frame


def _configs(text: str) -> list[tuple[int, str, str]]:
    """``1:poll,2:interrupt:sink`` -> [(1, 'poll', 'echo'), (2, 'interrupt', 'sink')]."""
    out = []
    for item in text.split(","):
        parts = item.split(":")
        mode = parts[1] if len(parts) > 1 and parts[1] else "poll"
        app = parts[2] if len(parts) > 2 and parts[2] else "echo"
        out.append((int(parts[0]), mode, app))
    return out


def _groups(sizes: list[int]) -> list[list[int]]:
    """Sizes that share VM set-up: frames that fit 2 KiB buffers, jumbo ones."""
    small = [s for s in sizes if s + 12 <= 2048]
    big = [s for s in sizes if s + 12 > 2048]
    return [g for g in (small, big) if g]


def run_emu(status, q: int, mode: str, app: str, sizes: list[int], seconds: float,
            warmup: float) -> list:
    from emu.testing import procs, traffic
    rows = []
    for group in _groups(sizes):
        with procs.Fleet() as fleet:
            topo = traffic.Topology(fleet, app, queues=q, mode=mode,
                                    max_size=max(group)).start()
            for size in group:
                label = f"emu {app} {q}q {mode}"
                r = topo.measure(size, seconds, warmup=warmup,
                                 on_tick=_util.tick_status(status, label))
                status.note(f"{label} {size:5d} B: {r['mpps']:.2f} Mpps {r['gbps']:.1f} Gbps, "
                            f"{r['cpu_ns_per_packet'] or 0:.0f} CPU ns/pkt, sent {r['sent']} "
                            f"received {r['received']} drops {r['drops']} errors {r['errors']}")
                rows.append(r)
            problems = fleet.close()
        for r in rows:
            r.setdefault("teardown_problems", problems)
        _util.settle_machine()
    return rows


def run_dpdk(status, sizes: list[int], seconds: float, warmup: float) -> list:
    from emu.testing import dpdk
    rows = []
    for size in sizes:
        status.set(f"DPDK testpmd virtio-user -> vhost, {size} B ...")
        r = dpdk.one_copy(size, seconds, "u2v", warmup=warmup)
        status.note(f"DPDK one copy {size:5d} B: {r['mpps']:.2f} Mpps, "
                    f"{r['cpu_ns_per_packet']:.0f} CPU ns/pkt")
        rows.append(r)
        _util.settle_machine()
    return rows


def summarize(emu_rows, dpdk_rows, memcpy) -> list[dict]:
    out = []
    keys = sorted({(r["app"], r["queues"], r["mode"], r["size"]) for r in emu_rows})
    for app, q, mode, size in keys:
        runs = [r for r in emu_rows
                if (r["app"], r["queues"], r["mode"], r["size"]) == (app, q, mode, size)]
        e = {"app": app, "queues": q, "mode": mode, "size": size,
             "mpps": _util.stats_of(runs, "mpps"), "gbps": _util.stats_of(runs, "gbps"),
             "cpu_ns_per_packet": _util.stats_of(runs, "cpu_ns_per_packet"),
             **{k: sum(r[k] for r in runs) for k in ("sent", "received", "drops", "errors")},
             "balanced": all(r["balanced"] for r in runs), "runs": len(runs)}
        mem = _util.median(memcpy.get(size, []))
        if mem:
            e["memcpy_gbps"] = mem
            e["share_of_memcpy"] = e["gbps"]["median"] / mem
        d = {r["run"]: r["mpps"] for r in dpdk_rows if r["size"] == size}
        if d:
            e["dpdk_mpps"] = _util.median(list(d.values()))
            # each run against the reference of the same run, then the median
            ratios = [r["mpps"] / d[r["run"]] for r in runs if d.get(r["run"])]
            e["ratio_vs_dpdk"] = _util.median(ratios)
            e["ratio_vs_dpdk_runs"] = ratios
        out.append(e)
    return out


def table(summary):
    from rich.table import Table
    t = Table(title="vhost-pci one copy (emu) vs DPDK one copy and memcpy, same run (medians)",
              title_justify="left")
    for c in ("app", "queues", "mode", "size", "Mpps", "Gbps", "CPU ns/pkt", "DPDK Mpps", "vs DPDK",
              "memcpy Gbps", "share", "balanced"):
        t.add_column(c, justify="right")
    for e in summary:
        t.add_row(e["app"], str(e["queues"]), e["mode"], str(e["size"]),
                  f"{e['mpps']['median']:.2f}",
                  f"{e['gbps']['median']:.1f}", f"{e['cpu_ns_per_packet']['median'] or 0:.0f}",
                  f"{e['dpdk_mpps']:.2f}" if "dpdk_mpps" in e else "-",
                  f"{e['ratio_vs_dpdk']:.2f}x" if "ratio_vs_dpdk" in e else "-",
                  f"{e.get('memcpy_gbps', 0):.0f}",
                  f"{e['share_of_memcpy']:.0%}" if "share_of_memcpy" in e else "-",
                  "yes" if e["balanced"] and not e["errors"] else "NO")
    return t


def plot(summary, out_dir):
    plt = common.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for app, q, mode in sorted({(e["app"], e["queues"], e["mode"]) for e in summary}):
        es = [e for e in summary if (e["app"], e["queues"], e["mode"]) == (app, q, mode)]
        xs = [e["size"] for e in es]
        label = f"emu vhost-pci {app} {q}q {mode}"
        a1.plot(xs, [e["mpps"]["median"] for e in es], "o-", label=label)
        a2.plot(xs, [e["gbps"]["median"] for e in es], "o-", label=label)
    first = [e for e in summary if (e["app"], e["queues"], e["mode"]) ==
             (summary[0]["app"], summary[0]["queues"], summary[0]["mode"])]
    dp = [(e["size"], e["dpdk_mpps"]) for e in first if "dpdk_mpps" in e]
    if dp:
        a1.plot(*zip(*dp), "^k", ms=9, label="DPDK testpmd virtio-user->vhost")
        a2.plot([s for s, _ in dp], [m * s * 8 / 1e3 for s, m in dp], "^k", ms=9,
                label="DPDK testpmd virtio-user->vhost")
    mem = [(e["size"], e["memcpy_gbps"]) for e in first if "memcpy_gbps" in e]
    if mem:
        a2.plot(*zip(*mem), "s--", color="gray", label="hot memcpy (ceiling)")
    for a, yl in ((a1, "Mpps"), (a2, "Gbit/s")):
        a.set_xscale("log")
        a.set_xlabel("frame bytes")
        a.set_ylabel(yl)
        a.legend(fontsize=7)
    a1.set_title("packet rate (medians, same run)")
    a2.set_title("throughput vs memcpy ceiling")
    fig.tight_layout()
    path = common.plot_path("throughput", out_dir)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    ap.add_argument("--sizes", default=None, help="comma list of frame sizes")
    ap.add_argument("--configs", default=None,
                    help="queues:mode[:app] list, e.g. 1:poll,2:interrupt,1:poll:sink")
    ap.add_argument("--no-dpdk", action="store_true", help="skip the DPDK reference")
    args = ap.parse_args(argv)
    q = args.quick
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        (QUICK_SIZES if q else FULL_SIZES)
    configs = _configs(args.configs) if args.configs else (QUICK_CONFIGS if q else FULL_CONFIGS)
    runs = args.runs or (1 if q else 3)
    seconds = args.seconds or (1.0 if q else 3.0)
    warmup = 0.3 if q else 0.5
    from emu.testing import dpdk, procs
    use_dpdk = not args.no_dpdk and dpdk.available()
    dpdk_sizes = [s for s in sizes if s <= DPDK_MAX] if use_dpdk else []
    con = _util.console(args.no_live)
    emu_rows, dpdk_rows, memcpy = [], [], {}
    with procs.signals_raise(), _util.Status(con, "throughput: emu vhost-pci vs DPDK vs memcpy",
                                             args.no_live) as st:
        for run in range(runs):
            for nq, mode, app in configs:
                for r in run_emu(st, nq, mode, app, sizes, seconds, warmup):
                    emu_rows.append({"run": run, **r})
            for r in run_dpdk(st, dpdk_sizes, max(seconds, 1.5), 1.5 if q else 2.0):
                dpdk_rows.append({"run": run, **r})
            for s in sizes:
                memcpy.setdefault(s, []).append(_util.memcpy_gbps(s))
    summary = summarize(emu_rows, dpdk_rows, memcpy)
    path = common.write_json("throughput", {
        "quick": q, "runs": runs, "seconds": seconds, "warmup": warmup, "sizes": sizes,
        "configs": [{"queues": n, "mode": m, "app": a} for n, m, a in configs],
        "dpdk_available": dpdk.available(), "dpdk_sizes": dpdk_sizes,
        "layout": "VM2 (copy loop) on CPU 0, VM1 on CPU 1; testpmd vhost forwards on CPU 0, "
                  "virtio-user on CPU 1",
        "summary": summary, "emu": emu_rows, "dpdk": dpdk_rows,
        "memcpy_gbps": {str(k): v for k, v in memcpy.items()}}, args.out)
    png = plot(summary, args.out)
    con.print(table(summary))
    con.print(f"wrote {path} and {png}")
    bad = [e for e in summary if e["errors"] or not e["balanced"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
