"""The measurement of ``emu bench``: ``--runs`` rounds, each with fresh VMs
measuring every size, then DPDK testpmd's one-copy path at the same sizes
(while no emu VM polls: the two never share the cores), and hot memcpy of
each size.  The machine's load is read before and after; the CPU time the
VMs got is in each result (``cpu_s``)."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Any

from emu.bench.consts import DPDK_MAX, PATHS
from emu.bench.live import Display, _Static


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "host": platform.node()}


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1min": one, "5min": five, "15min": fifteen}


def busy_cpu_share(seconds: float = 0.5) -> float:
    """The share of all cores busy over *seconds* (from /proc/stat), before
    our VMs exist: what else runs on this machine."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def run(args, console, argv: list[str]) -> dict[str, Any]:
    from rich.live import Live

    from emu import ring
    from emu.testing import dpdk, procs, traffic

    title = (f"emu bench: {PATHS[args.app]}, {args.queues} queue pair"
             f"{'s' if args.queues > 1 else ''}, {args.mode} mode")
    display = Display(console, args, title)
    use_dpdk = not args.no_dpdk and dpdk.available()
    dpdk_sizes = [s for s in args.sizes if s <= DPDK_MAX] if use_dpdk else []
    before = {"loadavg": load(), "busy_share": busy_cpu_share()}
    emu_rows: list[dict] = []
    dpdk_rows: list[dict] = []
    problems: list[str] = []
    reference_errors: list[str] = []
    t_start = time.monotonic()
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with procs.signals_raise():
        for n in range(args.runs):
            with procs.Fleet(pin=not args.no_pin) as fleet:
                console.print(f"run {n + 1}/{args.runs}: starting VMs in {fleet.dir} ...")
                topo = traffic.Topology(fleet, args.app, queues=args.queues, mode=args.mode,
                                        max_size=max(args.sizes)).start()
                console.print(f"{len(topo.vms)} VMs up in {topo.started_s:.2f} s "
                              f"(pids {', '.join(str(p) for p in topo.pids)})")
                if n == 0 and len(topo.vms) > procs.cpu_count() and args.mode == "poll":
                    console.print(f"[yellow]note: {len(topo.vms)} polling VMs on "
                                  f"{procs.cpu_count()} cores share cores by scheduler time "
                                  "slices (a ring per slice); --mode interrupt lets idle loops "
                                  "sleep[/yellow]")
                display.title = f"{title} -- run {n + 1}/{args.runs}"
                live_cm = _Static() if args.no_live else Live(display.render(), console=console,
                                                              refresh_per_second=4,
                                                              transient=False)
                with live_cm as live:
                    def tick(prev, cur, phase):
                        display.update(prev, cur, phase)
                        live.update(display.render())
                    for size in args.sizes:
                        display.rows.clear()
                        r = topo.measure(size, args.duration, warmup=args.warmup,
                                         burst=args.burst, on_tick=tick)
                        r["run"] = n
                        emu_rows.append(r)
                        if args.no_live:
                            console.print(f"{size:5d} B: {r['mpps']:.2f} Mpps {r['gbps']:.2f} Gbps "
                                          f"sent {r['sent']} received {r['received']} "
                                          f"drops {r['drops']} errors {r['errors']}")
                problems += fleet.close()
            for size in dpdk_sizes:
                console.print(f"run {n + 1}/{args.runs}: DPDK testpmd virtio-user -> vhost, "
                              f"{size} B ...")
                try:    # the reference's figures, as benchmarks/throughput.py takes them
                    d = dpdk.one_copy(size, max(3.0, args.duration), "u2v",
                                      warmup=2.0)
                except RuntimeError as e:       # a reference that failed is said, not fatal
                    console.print(f"[yellow]DPDK {size} B: no figure: {str(e).splitlines()[0]}"
                                  "[/yellow]")
                    reference_errors.append(f"DPDK {size} B, run {n + 1}: "
                                            f"{str(e).splitlines()[0]}")
                    continue
                if d is not None:
                    dpdk_rows.append({"run": n, "size": size, "mpps": d["mpps"],
                                      "cpu_ns_per_packet": d.get("cpu_ns_per_packet")})
                    console.print(f"{size:5d} B: DPDK {d['mpps']:.2f} Mpps")
    memcpy = {}
    for size in args.sizes:
        # best of 3: a preempted measurement only ever looks slower
        ns = min(ring.memcpy_ns(size, max(20000, int(1e8 // size))) for _ in range(3))
        memcpy[size] = size * 8 / ns
    after = {"loadavg": load()}
    return {"command": ["emu", "bench", *argv], "date": date, "machine": machine(),
            "app": args.app, "path": PATHS[args.app], "queues": args.queues, "mode": args.mode,
            "duration": args.duration, "warmup": args.warmup, "runs": args.runs,
            "pinned": not args.no_pin, "dpdk_available": dpdk.available(),
            "load_before": before, "load_after": after,
            "wall_s": time.monotonic() - t_start,
            "summary": summarize(args.sizes, emu_rows, dpdk_rows, memcpy),
            "results": emu_rows, "dpdk": dpdk_rows,
            "memcpy_gbps": {str(k): v for k, v in memcpy.items()}, "problems": problems,
            "reference_errors": reference_errors,
            "python": sys.version.split()[0]}


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(sizes, emu_rows, dpdk_rows, memcpy) -> list[dict[str, Any]]:
    """Per size: medians and ranges over the runs, the references, the balance."""
    out = []
    for size in sizes:
        runs = [r for r in emu_rows if r["size"] == size]
        mpps = [r["mpps"] for r in runs]
        d = {r["run"]: r["mpps"] for r in dpdk_rows if r["size"] == size}
        ratios = [r["mpps"] / d[r["run"]] for r in runs if d.get(r["run"])]
        gbps = _median([r["gbps"] for r in runs])
        e = {"size": size, "runs": len(runs), "mpps": _median(mpps),
             "mpps_range": [min(mpps), max(mpps)] if mpps else [], "mpps_runs": mpps,
             "gbps": gbps, "cpu_ns_per_packet": _median([r["cpu_ns_per_packet"] for r in runs]),
             "cpu_s": sum(r["cpu_s"] for r in runs), "window_s": sum(r["window_s"] for r in runs),
             "sent": sum(r["sent"] for r in runs), "received": sum(r["received"] for r in runs),
             "drops": sum(r["drops"] for r in runs), "errors": sum(r["errors"] for r in runs),
             "balanced": all(r["balanced"] for r in runs),
             "memcpy_gbps": memcpy[size], "share_of_memcpy": (gbps or 0) / memcpy[size]}
        if d:
            e["dpdk_mpps"] = _median(list(d.values()))
            e["dpdk_mpps_runs"] = list(d.values())
            e["ratio_vs_dpdk"] = _median(ratios)
        out.append(e)
    return out
