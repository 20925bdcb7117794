"""The path vhost-pci replaces: VM1 -> vswitch (two copies) -> VM3, beside
emu's VM1 -> VM2 (vhost-pci forward, one copy) -> VM3, same run.

* DPDK vswitch: testpmd virtio-user txonly (VM1) -> testpmd with two
  net_vhost ports in io forwarding (the vswitch: a dequeue copy and an
  enqueue copy) -> testpmd virtio-user rxonly (VM3).
* emu chain: emu VM1 gen -> emu VM2 forward (two vhost-pci-net devices:
  VM1's TX copied into VM3's RX) -> emu VM3 sink, polling and interrupt mode.
* emu pair: VM1 gen -> VM2 echo -> VM1 (two processes, one copy), the
  vhost-pci path when the two endpoints talk directly.

This machine has 2 cores and the three-VM paths have three busy loops:
the switch (or VM2) runs on CPU 0, VM1 and VM3 share CPU 1.  So besides
Mpps the figure that matters is CPU time per packet (utime + stime of
every process, /proc), reported as Mpps per busy core (1000 / CPU ns per
packet).  Medians over --runs; emu and DPDK alternate.

Writes results/vswitch.json and vswitch.png.
    python benchmarks/vswitch.py [--quick] [--runs N] [--seconds S] [--sizes 64,1518] [--no-dpdk]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
import common  # noqa: E402

EMU_PATHS = (("emu chain poll", "forward", "poll"), ("emu chain interrupt", "forward", "interrupt"),
             ("emu pair poll", "echo", "poll"))
DPDK_PATH = "DPDK vswitch"


def run_emu(status, name, app, mode, sizes, seconds, warmup) -> list:
    from emu.testing import procs, traffic
    rows = []
    with procs.Fleet() as fleet:
        topo = traffic.Topology(fleet, app, mode=mode, max_size=max(sizes)).start()
        for size in sizes:
            r = topo.measure(size, seconds, warmup=warmup, on_tick=_util.tick_status(status, name))
            status.note(f"{name} {size:5d} B: {r['mpps']:.3f} Mpps, {r['processes']} processes "
                        f"{r['cpu_s']:.2f} CPU s, {r['cpu_ns_per_packet'] or 0:.0f} CPU ns/pkt, "
                        f"sent {r['sent']} received {r['received']} drops {r['drops']}")
            rows.append({**r, "path": name})
    _util.settle_machine()
    return rows


def run_dpdk(status, sizes, seconds, warmup) -> list:
    from emu.testing import dpdk
    rows = []
    for size in sizes:
        status.set(f"{DPDK_PATH}: {size} B ...")
        r = dpdk.vswitch(size, seconds, warmup=warmup)
        status.note(f"{DPDK_PATH} {size:5d} B: {r['mpps']:.3f} Mpps, {r['processes']} processes "
                    f"{r['cpu_s']:.2f} CPU s, {r['cpu_ns_per_packet']:.0f} CPU ns/pkt")
        rows.append({**r, "path": DPDK_PATH})
        _util.settle_machine()
    return rows


def summarize(rows) -> list[dict]:
    out = []
    for path, size in sorted({(r["path"], r["size"]) for r in rows}):
        runs = [r for r in rows if (r["path"], r["size"]) == (path, size)]
        e = {"path": path, "size": size, "mpps": _util.stats_of(runs, "mpps"),
             "cpu_ns_per_packet": _util.stats_of(runs, "cpu_ns_per_packet"),
             "processes": runs[0]["processes"], "runs": len(runs)}
        ns = e["cpu_ns_per_packet"]["median"]
        e["mpps_per_core"] = 1e3 / ns if ns else None
        if not path.startswith("DPDK"):
            e.update({k: sum(r[k] for r in runs) for k in ("sent", "received", "drops", "errors")})
            e["balanced"] = all(r["balanced"] for r in runs)
        out.append(e)
    # each run against the vswitch of the same run, then the median
    ref = {(r["size"], r["run"]): r for r in rows if r["path"] == DPDK_PATH}
    for e in out:
        if e["path"] == DPDK_PATH:
            continue
        pairs = [(r, ref[(r["size"], r["run"])]) for r in rows
                 if (r["path"], r["size"]) == (e["path"], e["size"])
                 and (r["size"], r["run"]) in ref]
        if pairs:
            e["ratio_mpps_vs_vswitch"] = _util.median([r["mpps"] / d["mpps"] for r, d in pairs])
            per_core = [d["cpu_ns_per_packet"] / r["cpu_ns_per_packet"] for r, d in pairs
                        if r["cpu_ns_per_packet"]]
            if per_core:
                e["ratio_per_core_vs_vswitch"] = _util.median(per_core)
    return out


def table(summary):
    from rich.table import Table
    t = Table(title="VM1 -> VM3: vswitch (two copies) vs vhost-pci (one copy), same run (medians)",
              title_justify="left")
    for c in ("path", "size", "procs", "Mpps", "CPU ns/pkt", "Mpps/core", "vs vswitch",
              "per core vs vswitch", "balanced"):
        t.add_column(c, justify="right")
    for e in summary:
        bal = "-" if "balanced" not in e else ("yes" if e["balanced"] and not e["errors"] else "NO")
        t.add_row(e["path"], str(e["size"]), str(e["processes"]), f"{e['mpps']['median']:.3f}",
                  f"{e['cpu_ns_per_packet']['median'] or 0:.0f}",
                  f"{e['mpps_per_core'] or 0:.3f}",
                  f"{e['ratio_mpps_vs_vswitch']:.1f}x" if "ratio_mpps_vs_vswitch" in e else "-",
                  f"{e['ratio_per_core_vs_vswitch']:.1f}x" if "ratio_per_core_vs_vswitch" in e
                  else "-", bal)
    return t


def plot(summary, out_dir):
    plt = common.pyplot()
    sizes = sorted({e["size"] for e in summary})
    paths = sorted({e["path"] for e in summary}, key=lambda p: (not p.startswith("DPDK"), p))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(1, len(paths))
    for i, p in enumerate(paths):
        es = {e["size"]: e for e in summary if e["path"] == p}
        xs = [k + i * width for k in range(len(sizes))]
        axes[0].bar(xs, [es[s]["mpps"]["median"] if s in es else 0 for s in sizes], width, label=p)
        axes[1].bar(xs, [es[s]["mpps_per_core"] or 0 if s in es else 0 for s in sizes], width,
                    label=p)
    for a, yl, title in ((axes[0], "Mpps", "VM1 -> VM3 packet rate"),
                         (axes[1], "Mpps per busy core", "per core (1000 / CPU ns per packet)")):
        a.set_xticks([k + width * (len(paths) - 1) / 2 for k in range(len(sizes))])
        a.set_xticklabels([f"{s} B" for s in sizes])
        a.set_ylabel(yl)
        a.set_yscale("log")
        a.set_title(title)
        a.legend(fontsize=7)
    fig.tight_layout()
    path = common.plot_path("vswitch", out_dir)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    ap.add_argument("--sizes", default=None, help="comma list of frame sizes (<= 1518)")
    ap.add_argument("--no-dpdk", action="store_true", help="skip the DPDK vswitch")
    args = ap.parse_args(argv)
    q = args.quick
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([64] if q else [64, 1518])
    runs = args.runs or (1 if q else 3)
    seconds = args.seconds or (1.0 if q else 3.0)
    warmup = 0.3 if q else 0.5
    from emu.testing import dpdk, procs
    use_dpdk = not args.no_dpdk and dpdk.available()
    con = _util.console(args.no_live)
    rows = []
    with procs.signals_raise(), _util.Status(con, "vswitch path vs vhost-pci", args.no_live) as st:
        for run in range(runs):
            for name, app, mode in EMU_PATHS:
                rows += [{"run": run, **r} for r in run_emu(st, name, app, mode, sizes, seconds,
                                                            warmup)]
            if use_dpdk:
                rows += [{"run": run, **r} for r in run_dpdk(st, sizes, max(seconds, 1.5),
                                                             1.5 if q else 2.0)]
    summary = summarize(rows)
    path = common.write_json("vswitch", {
        "quick": q, "runs": runs, "seconds": seconds, "sizes": sizes,
        "dpdk_available": dpdk.available(),
        "layout": "switch / VM2 busy loop on CPU 0; VM1 and VM3 loops share CPU 1 "
                  "(2 cores, 3 busy loops)",
        "summary": summary, "raw": rows}, args.out)
    png = plot(summary, args.out)
    con.print(table(summary))
    con.print(f"wrote {path} and {png}")
    bad = [e for e in summary if e.get("errors") or e.get("balanced") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
