"""Every benchmark, one after the other (never two busy ones at once), then
the targets checked against references measured in the same run.

    python benchmarks/run_all.py [--quick] [--out DIR] [--only a,b] [--skip a,b] [--no-live]

Benchmarks (each also runs alone, with the same --quick): throughput
(emu vhost-pci vs DPDK one copy vs memcpy), vswitch (two-copy vswitch path
vs vhost-pci chain, CPU per packet), latency (ping-pong vs eventfd),
control_plane (start-up vs QEMU, first packet, 1..16 pairs), ring_copy (the
C copy loop alone), socket_netdev (-netdev socket frames/s with a C peer,
beside QEMU 7.2 TCG's).  Writes results/<name>.json and .png for each, and
results/summary.json, summary.md (the README's table) and summary.png.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
import common  # noqa: E402

ORDER = ("throughput", "vswitch", "latency", "control_plane", "ring_copy", "socket_netdev")
LOWER_IS_BETTER = ("us", "ms", "x floor")


def _load(out_dir: str, name: str) -> dict | None:
    try:
        with open(os.path.join(out_dir, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _find(rows, **kw):
    for r in rows or []:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def targets(out_dir: str) -> list[dict]:
    """The issue's targets, each from figures of this run (None: not measured)."""
    tp, vs, lat, cp = (_load(out_dir, n) for n in ("throughput", "vswitch", "latency",
                                                   "control_plane"))
    out = []

    def add(name, value, target, unit, ref, how):
        met = None if value is None else value >= target if unit not in LOWER_IS_BETTER \
            else value <= target
        out.append({"target": name, "value": value, "goal": target, "unit": unit, "met": met,
                    "reference": ref, "how": how})

    # DPDK's one-copy reference moves packets one way (virtio-user txonly ->
    # vhost rxonly): the like-for-like emu figure is VM1 gen -> VM2 sink.
    # The echo round trip (two copies per packet) is reported beside it.
    for size in (64, 1518):
        e = _find(tp and tp["summary"], app="sink", queues=1, mode="poll", size=size)
        add(f"vhost-pci {size} B vs DPDK one copy", e and e.get("ratio_vs_dpdk"), 1.2, "x",
            e and e.get("dpdk_mpps"),
            "emu VM1 gen -> VM2 sink, 1 queue pair, polling, Mpps / "
            "testpmd virtio-user txonly -> vhost rxonly Mpps")
    e = _find(vs and vs["summary"], path="emu pair poll", size=64)
    add("vhost-pci 64 B vs two-copy vswitch, per core", e and e.get("ratio_per_core_vs_vswitch"),
        2.0, "x", None, "Mpps per busy core (1000 / CPU ns per packet), emu VM1<->VM2 vs "
                        "testpmd VM1 -> vswitch -> VM3")
    e = _find(vs and vs["summary"], path="emu chain poll", size=64)
    add("vhost-pci chain 64 B vs two-copy vswitch, per core (same topology)",
        e and e.get("ratio_per_core_vs_vswitch"), 2.0, "x", None,
        "VM1 -> VM2 forward -> VM3 vs VM1 -> vswitch -> VM3, both polling, 3 loops on 2 cores")
    e = _find(tp and tp["summary"], app="sink", queues=1, mode="poll", size=1518)
    add("vhost-pci 1518 B share of hot memcpy", e and e.get("share_of_memcpy"), 0.5, "share",
        e and e.get("memcpy_gbps"), "emu VM1 -> VM2 Gbit/s / memcpy Gbit/s of 1518 B, same run")
    e = _find(lat and lat["emu"], mode="poll", size=64, engine="python")
    add("polling RTT p50, 64 B", e and e["rtt_us"]["p50"], 5.0, "us", None,
        "pingpong (Python engine: includes Python per-packet overhead) <-> echo")
    e = _find(lat and lat["emu"], mode="poll", size=64, engine="c")
    add("polling RTT p50, 64 B, C engine, vs eventfd spin", e and e.get("p50_vs_eventfd_spin"),
        1.5, "x floor", e and e["rtt_us"]["p50"],
        "pingpong (engine c: one C call per round trip) p50 / C eventfd spin p50, same run")
    for case in (DEFAULT_CASE, VM2_CASE):
        e = cp and cp["startup"]["cases"].get(case)
        for metric, goal in (("greeting", 2.0), ("query-status", 3.0)):
            m = e and e[metric]
            add(f"exec -> {'QMP greeting' if metric == 'greeting' else 'query-status answered'}"
                f", {case.split(',')[0]}, vs QEMU", m and m["ratio"], goal, "x",
                m and m["qemu_ms"], f"{case}: emu median ms / QEMU 7.2 median ms, same run")
    return out


#: the start-up cases the summary's targets are about (benchmarks/startup.py)
DEFAULT_CASE = "default machine (-S -m 256M -nodefaults), socketpair"
VM2_CASE = "VM2 (256 MiB, vhost-pci-net, guest), socketpair"


def markdown(tgts: list[dict], out_dir: str) -> str:
    tp, vs, lat, cp = (_load(out_dir, n) for n in ("throughput", "vswitch", "latency",
                                                   "control_plane"))
    lines = ["| figure (medians, same run) | emu | reference | ratio |",
             "| --- | --- | --- | --- |"]
    for size, app in ((64, "sink"), (64, "echo"), (1518, "sink"), (1518, "echo")):
        e = _find(tp and tp["summary"], app=app, queues=1, mode="poll", size=size)
        if e:
            ref = f"{e['dpdk_mpps']:.2f} Mpps DPDK testpmd one way" if "dpdk_mpps" in e else "-"
            ratio = f"{e['ratio_vs_dpdk']:.2f}x" if "ratio_vs_dpdk" in e else "-"
            what = ("VM1 -> VM2 vhost-pci (one way)" if app == "sink" else
                    "VM1 -> VM2 -> VM1 vhost-pci echo (round trip)")
            lines.append(f"| {what}, {size} B | {e['mpps']['median']:.2f} Mpps, "
                         f"{e['gbps']['median']:.1f} Gbit/s | {ref} | {ratio} |")
            if size == 1518 and app == "sink" and "memcpy_gbps" in e:
                lines.append(f"| 1518 B vs hot memcpy | {e['gbps']['median']:.1f} Gbit/s | "
                             f"{e['memcpy_gbps']:.0f} Gbit/s memcpy | "
                             f"{e['share_of_memcpy']:.0%} |")
    for path in ("emu pair poll", "emu chain interrupt"):
        e = _find(vs and vs["summary"], path=path, size=64)
        d = _find(vs and vs["summary"], path="DPDK vswitch", size=64)
        if e and d:
            lines.append(f"| {path}, 64 B, per busy core | {e['mpps_per_core']:.2f} Mpps/core | "
                         f"{d['mpps_per_core']:.3f} Mpps/core DPDK vswitch (2 copies) | "
                         f"{e.get('ratio_per_core_vs_vswitch', 0):.0f}x |")
    s = _find(lat and lat["eventfd"], mode="spin")
    for engine, how in (("python", "Python-driven"), ("c", "C engine")):
        e = _find(lat and lat["emu"], mode="poll", size=64, engine=engine)
        if e:
            lines.append(f"| ping-pong RTT p50/p99, 64 B, polling ({how}) | "
                         f"{e['rtt_us']['p50']:.1f}/{e['rtt_us']['p99']:.1f} us | "
                         + (f"{s['rtt_us']['p50']:.2f} us eventfd spin (C) |" if s else "- |")
                         + (f" {e.get('p50_vs_eventfd_spin', 0):.1f}x |" if s else " - |"))
    if cp:
        for case, e in cp["startup"]["cases"].items():
            for metric in ("greeting", "query-status"):
                m = e[metric]
                lines.append(f"| exec -> {metric}, {case} | {m['emu_ms']:.0f} ms | "
                             + (f"{m['qemu_ms']:.0f} ms QEMU 7.2 | {m['ratio']:.1f}x |"
                                if m["qemu_ms"] else "- | - |"))
        fp = cp["first_packet"]["median"]
        lines.append(f"| VM1 start -> first echoed packet | {fp['start_to_first_packet_ms']:.1f} ms"
                     " | - | - |")
        big = max(cp["scale"], key=lambda r: r["pairs"])
        lines.append(f"| {big['pairs']} VM pairs at once ({big['mode']}) | {big['mpps']:.2f} Mpps "
                     f"aggregate, RSS {big['rss_median_kib']['vm2'] / 1024:.0f} MiB/VM | - | - |")
    lines += ["", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for t in tgts:
        v = t["value"]
        val = "-" if v is None else (f"{v:.0%}" if t["unit"] == "share" else
                                     f"{v:.2f} {t['unit']}")
        goal = f"{t['goal']:.0%}" if t["unit"] == "share" else \
            (f"<= {t['goal']:g} {t['unit']}" if t["unit"] in LOWER_IS_BETTER
             else f">= {t['goal']}x")
        lines.append(f"| {t['target']} | {val} | {goal} | "
                     f"{'-' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
    return "\n".join(lines) + "\n"


def plot(tgts, out_dir) -> str:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    names = [textwrap.fill(t["target"], 38) for t in tgts if t["value"] is not None]
    vals = [(t["value"] / t["goal"]) if t["unit"] not in LOWER_IS_BETTER else t["goal"] / t["value"]
            for t in tgts if t["value"] is not None]
    ax.barh(names, vals, color=["tab:green" if v >= 1 else "tab:red" for v in vals])
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("measured / goal (>= 1 meets the target)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("targets, same run")
    fig.tight_layout()
    path = common.plot_path("summary", out_dir)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    ap.add_argument("--only", default="", help="comma list of benchmarks to run")
    ap.add_argument("--skip", default="", help="comma list of benchmarks to leave out")
    args = ap.parse_args(argv)
    out_dir = args.out or common.RESULTS
    names = [n for n in ORDER if (not args.only or n in args.only.split(","))
             and n not in args.skip.split(",")]
    con = _util.console(args.no_live)
    # a partial run (--only) keeps the status of the benchmarks it did not run
    status = (_load(out_dir, "summary") or {}).get("benchmarks", {}) if args.only else {}
    t_all = time.monotonic()
    for name in names:
        sub = (["--quick"] if args.quick else []) + ["--out", out_dir] + \
            (["--no-live"] if args.no_live else [])
        if args.runs:
            sub += ["--runs", str(args.runs)]
        con.rule(f"{name} {' '.join(sub)}")
        t0 = time.monotonic()
        try:
            rc = importlib.import_module(name).main(sub) or 0
        except KeyboardInterrupt:
            con.print("interrupted")
            return 130
        except Exception:
            con.print(traceback.format_exc())
            rc = "exception"
        status[name] = {"rc": rc, "seconds": time.monotonic() - t0,
                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tgts = targets(out_dir)
    md = markdown(tgts, out_dir)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(md)
    png = plot(tgts, out_dir)
    path = common.write_json("summary", {"quick": args.quick, "benchmarks": status,
                                         "targets": tgts,
                                         "wall_s": time.monotonic() - t_all}, out_dir)
    con.rule("summary")
    con.print(md)
    con.print(f"wrote {path}, summary.md and {png}")
    return 0 if all(s["rc"] == 0 for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
