"""What ``emu bench`` prints and draws: the summary table, what the
machine's load did to the figures, the plot."""
from __future__ import annotations

from typing import Any

#: the share of the cores busy before the run above which the figures are
#: those of a shared machine, not of emu (README, "What to expect")
BUSY = 0.25


def summary_table(data: dict):
    from rich.table import Table
    t = Table(title=f"summary: {data['path']} ({data['queues']} queue pair(s), {data['mode']} "
                    f"mode), median of {data['runs']} run(s) of {data['duration']:g} s",
              title_justify="left")
    for c in ("size B", "Mpps", "range", "Gbps", "DPDK Mpps", "vs DPDK", "memcpy Gbps", "share",
              "CPU ns/pkt", "sent", "drops", "errors", "balanced"):
        t.add_column(c, justify="right")
    for r in data["summary"]:
        ok = r["balanced"] and not r["errors"]
        lo, hi = r["mpps_range"] or (0, 0)
        t.add_row(str(r["size"]), f"{r['mpps']:.2f}", f"{lo:.2f}-{hi:.2f}", f"{r['gbps']:.2f}",
                  f"{r['dpdk_mpps']:.2f}" if "dpdk_mpps" in r else "-",
                  f"{r['ratio_vs_dpdk']:.2f}x" if r.get("ratio_vs_dpdk") else "-",
                  f"{r['memcpy_gbps']:.0f}", f"{r['share_of_memcpy']:.0%}",
                  f"{r['cpu_ns_per_packet']:.0f}" if r["cpu_ns_per_packet"] else "-",
                  str(r["sent"]), str(r["drops"]), str(r["errors"]),
                  "[green]yes[/green]" if ok else "[red]NO[/red]")
    return t


def busy(data: dict) -> bool:
    before = data["load_before"]
    cores = data["machine"]["cores"] or 1
    return before["busy_share"] > BUSY or before["loadavg"]["1min"] > BUSY * 2 * cores


def notes(data: dict) -> list[str]:
    """The run's facts, and what a busy machine did to them."""
    m, before, after = data["machine"], data["load_before"], data["load_after"]
    lines = [f"{data['date']}, {m['cpu'] or 'unknown CPU'}, {m['cores']} cores; "
             f"{data['runs']} run(s) x {data['duration']:g} s per size; load average "
             f"{before['loadavg']['1min']:.2f} before, {after['loadavg']['1min']:.2f} after; "
             f"{before['busy_share']:.0%} of the cores busy before the VMs started"]
    spread = [(r["size"], r["mpps_range"]) for r in data["summary"] if r["mpps_range"]]
    varied = [(s, hi / lo) for s, (lo, hi) in spread if lo > 0 and hi / lo > 1.3]
    if busy(data):
        lines.append(
            "[yellow]This machine was busy while measuring: the figures are those of a shared "
            "machine, lower than on an idle one and different from run to run.  The path runs "
            "three busy loops (VM2's copy loop, VM1's generator and receiver) on "
            f"{m['cores']} cores: every time slice another process takes from one of them stalls "
            "the whole round trip, so the rate falls with the load; DPDK's testpmd pair (two "
            "loops) loses less.  Compare with the README only on an idle machine (README, "
            "'What to expect').[/yellow]")
    if varied:
        lines.append("[yellow]runs varied: " + ", ".join(f"{s} B by {x - 1:.0%}" for s, x in varied)
                     + " between slowest and fastest -- the median is reported[/yellow]")
    for err in data.get("reference_errors", []):
        lines.append(f"[yellow]reference missing: {err}[/yellow]")
    if not data["dpdk_available"]:
        lines.append("DPDK testpmd is not installed: no DPDK reference "
                     "(scripts/install-peers.sh installs it)")
    return lines


def plot(data: dict, path: str) -> str:
    """Packet rate and throughput per size on log scales (every bar
    visible), value labels, the references measured beside them as
    points, and the run's facts.  Raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rs = data["summary"]
    x = list(range(len(rs)))
    labels = [f"{r['size']} B" for r in rs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    _bars(a1, x, [r["mpps"] for r in rs], [r["mpps_range"] for r in rs], "Mpps")
    dp = [(i, r["dpdk_mpps"]) for i, r in zip(x, rs) if r.get("dpdk_mpps")]
    if dp:
        _points(a1, dp, "^", "black", "DPDK testpmd one copy (same run)", "Mpps")
    a1.set_ylabel("Mpps (log scale)")
    a1.set_title("packet rate")
    gb = [r["gbps"] for r in rs]
    _bars(a2, x, gb, [[lo * r["size"] * 8 / 1e3, hi * r["size"] * 8 / 1e3]
                      for r, (lo, hi) in zip(rs, [r["mpps_range"] for r in rs])], "Gbit/s")
    _points(a2, [(i, r["memcpy_gbps"]) for i, r in zip(x, rs)], "s", "tab:gray",
            "hot memcpy, same size (ceiling)", "Gbit/s")
    dg = [(i, r["dpdk_mpps"] * r["size"] * 8 / 1e3) for i, r in zip(x, rs) if r.get("dpdk_mpps")]
    if dg:
        _points(a2, dg, "^", "black", "DPDK testpmd one copy (same run)", "Gbit/s")
    a2.set_ylabel("Gbit/s (log scale)")
    a2.set_title("throughput")
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for a in (a1, a2):
        a.set_yscale("log")
        # a log axis has no zero: its bottom well below the smallest value,
        # so the lowest bar stands (and its label shows) above the axis
        shown = [v for v in _values(a) if v > 0]
        if shown:
            a.set_ylim(min(shown) / 3, max(shown) * 2.5)
        a.yaxis.set_major_formatter(plain)
        a.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        a.set_xticks(x, labels)
        a.set_xlim(-0.6, len(rs) - 0.4)
        a.legend(fontsize=7, loc="lower right")
        a.grid(axis="y", which="both", alpha=0.2)
    m, before, after = data["machine"], data["load_before"], data["load_after"]
    fig.suptitle(f"emu bench: {data['path']}, {data['queues']}q, {data['mode']} -- median of "
                 f"{data['runs']} run(s) x {data['duration']:g} s", fontsize=10)
    fig.text(0.01, 0.01, f"{data['date']}  {m['cpu']} ({m['cores']} cores)  load "
             f"{before['loadavg']['1min']:.2f} -> {after['loadavg']['1min']:.2f}, "
             f"{before['busy_share']:.0%} busy before  |  {' '.join(data['command'])}",
             fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _minor_label(v: float, _pos: Any) -> str:
    """2 and 5 of each decade labelled too: a span of one or two decades
    has a single major tick otherwise."""
    lead = f"{v:.0e}"[0]
    return f"{v:g}" if lead in "25" else ""


def _values(ax: Any) -> list[float]:
    """Every value drawn on an axis: bars, their ranges, the points."""
    return ax.__dict__.setdefault("_emu_values", [])


def _bars(ax: Any, x: list[int], values: list[float], ranges: list, unit: str) -> None:
    lo = [v - (r[0] if r else v) for v, r in zip(values, ranges)]
    hi = [(r[1] if r else v) - v for v, r in zip(values, ranges)]
    _values(ax).extend([*values, *(c for r in ranges if r for c in r)])
    ax.bar(x, values, color="tab:blue", width=0.55, label="emu vhost-pci (median, range)",
           yerr=[lo, hi], capsize=4, error_kw={"elinewidth": 1})
    for i, v in zip(x, values):
        ax.annotate(f"{v:.2f}" if v < 100 else f"{v:.0f}", (i, v), textcoords="offset points",
                    xytext=(-14, 4), ha="center", fontsize=8, color="tab:blue")


def _points(ax: Any, pts: list[tuple[int, float]], marker: str, color: str, label: str,
            unit: str) -> None:
    xs, ys = zip(*pts)
    _values(ax).extend(ys)
    ax.plot([x + 0.18 for x in xs], ys, marker, color=color, ms=8, ls="none", label=label)
    for x, y in pts:
        ax.annotate(f"{y:.2f}" if y < 100 else f"{y:.0f}", (x + 0.18, y),
                    textcoords="offset points", xytext=(12, -3), fontsize=7, color=color)
