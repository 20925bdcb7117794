"""Round-trip latency: emu VM1 pingpong <-> emu VM2 echo, beside an eventfd
round trip between two processes, same run.

VM1's guest app ``pingpong`` sends one stamped frame, waits for VM2's echo
(VM1's TX copied into VM1's RX through the vhost-pci window) and records
the round trip; then the next.  Polling mode: both guests spin on their
rings.  Interrupt mode: VM1 kicks VM2's copy loop awake, VM2 signals VM1's
call eventfd, VM1's device model raises an MSI-X interrupt that wakes the
guest.  Two round-trip engines on VM1, same run (``--engines``): ``python``
drives the ring from Python through the DriverQueue API (tx_post, rx_sink:
its figures include Python's per-packet overhead), ``c`` does the whole
round trip in one C call timed inside C (emu_drv_pingpong; see
emu.guest.apps.PINGPONG_ENGINES).

The reference is the floor of any two-process notification: an eventfd
write -> read -> write -> read round trip in C (benchmarks/c/eventfd_rtt.c,
compiled with gcc at run time), busy-polling (spin) and sleeping (block).
Percentiles p50/p90/p99/p99.9 in microseconds; medians over --runs.

Writes results/latency.json and latency.png.
    python benchmarks/latency.py [--quick] [--runs N] [--count N] [--sizes 64,1518]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PCTS = ("p50", "p90", "p99", "p99.9")
MODES = ("poll", "interrupt")


def build_eventfd(tmp: str) -> str | None:
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    exe = os.path.join(tmp, "eventfd_rtt")
    subprocess.run([gcc, "-O2", "-o", exe, os.path.join(HERE, "c", "eventfd_rtt.c")],
                   check=True, capture_output=True, timeout=60)
    return exe


def run_eventfd(exe: str, mode: str, count: int, cpus: tuple[int, int]) -> dict:
    from emu.testing.procs import command
    out = subprocess.run(command([exe, str(count), mode, str(cpus[0]), str(cpus[1])]),
                         check=True, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


def python_floor(size: int, count: int) -> dict:
    """The Python engine's own cost: its two calls per round trip (tx_post,
    rx_sink verifying the frame) timed on rings in one private memory, the
    device's copy done in between (ring.copy, not timed) -- no second
    process, no cross-core traffic, no polling.  What is left of the emu
    round trip above this is the peer, the caches and the poll loop."""
    from emu import memory, ring
    from emu.guest import apps, packets
    from emu.spec import virtio, virtio_net
    from emu.spec.virtio_ring import ring_layout
    mem = memory.allocate(4 << 20, "memfd", name="lat-floor")
    try:
        feats = virtio.F_VERSION_1 | virtio_net.F_MRG_RXBUF
        table = ring.RegionTable(mem)
        pairs = []
        for base in (0, 2 << 20):
            d, a, u, nbytes = ring_layout(base, 256)
            drv = ring.DriverQueue(mem, 256, d, a, u, base + nbytes, 4096, features=feats)
            pairs.append((drv, ring.DeviceQueue.from_gpa(table, 256, d, a, u, features=feats)))
        (txq, txdev), (rxq, rxdev) = pairs
        rxq.rx_refill()
        tmpl = packets.udp_frame(size)
        frames = [bytearray(ring.expected_frame(tmpl, size, packets.STAMP_OFF, k))
                  for k in range(256)]
        sink = ring.Sink(stamp_off=packets.STAMP_OFF, verify=True)
        rtts = []
        for seq in range(count + 100):
            frame = frames[seq & 0xFF]
            frame[packets.STAMP_OFF:packets.STAMP_OFF + 8] = seq.to_bytes(8, "little")
            sink.next_seq = seq
            t0 = time.perf_counter_ns()
            txq.tx_post((frame,))
            t1 = time.perf_counter_ns()
            ring.copy(txdev, rxdev, 1)            # the device's work: not timed
            t2 = time.perf_counter_ns()
            ok = rxq.rx_sink(sink, 4).packets and sink.next_seq == seq + 1
            t3 = time.perf_counter_ns()
            if not ok:
                raise RuntimeError(f"loopback lost frame {seq}")
            if seq >= 100:
                rtts.append((t1 - t0) + (t3 - t2))
        return {k: v / 1e3 for k, v in apps.percentiles(rtts).items()}
    finally:
        mem.close()


def run_emu(status, mode: str, sizes: list[int], count: int, warmup: int,
            engines: tuple[str, ...] = ("python",)) -> list[dict]:
    from emu.testing import procs
    rows = []
    with procs.Fleet() as fleet:
        sock = fleet.path("vp.sock")
        vm2 = fleet.emu(procs.vhost_pci_args([sock], "echo", {"mode": mode}), name="vm2",
                        cpus=fleet.cpus(0))
        fleet.wait_socket(sock, vm2)
        vm1 = fleet.emu(procs.virtio_net_args(sock, "sink", procs.driver_params(max(sizes), mode)),
                        name="vm1", cpus=fleet.cpus(1))
        for size, engine in ((s, e) for s in sizes for e in engines):
            label = f"emu pingpong {mode} {size} B engine {engine}"
            status.set(f"{label} ...")
            _wait_guest(vm1)
            vm1.cmd("emu-set-guest-app", app="pingpong",
                    params={"size": size, "count": count, "warmup": warmup, "engine": engine})
            g = _wait_done(vm1, status, label, size, engine, count)
            vm1.cmd("emu-set-guest-app", app="sink", params={})
            _wait_app(vm1, "sink")          # the switch is asynchronous: no stale figures
            r = {"mode": mode, "size": size, "engine": g["engine"], "sent": g["sent"],
                 "received": g["received"], "lost": g["lost"],
                 "rtt_us": {k: v / 1e3 for k, v in g["rtt_ns"].items()}}
            status.note(f"{label}: p50 {r['rtt_us']['p50']:.1f} us, p99 {r['rtt_us']['p99']:.1f} "
                        f"us, p99.9 {r['rtt_us']['p99.9']:.1f} us ({g['received']}/{g['sent']}, "
                        f"lost {g['lost']})")
            rows.append(r)
    _util.settle_machine()
    return rows


def _wait_guest(vm, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while "guest" not in vm.cmd("query-emu-stats"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{vm.name}: no guest after {timeout} s")
        time.sleep(0.02)


def _wait_app(vm, app: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while vm.cmd("query-emu-stats")["guest"].get("app") != app:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{vm.name}: app {app} not running after {timeout} s")
        time.sleep(0.01)


def _wait_done(vm, status, label, size, engine, count, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        g = vm.cmd("query-emu-stats")["guest"]
        if "error" in g:
            raise RuntimeError(f"{vm.name}: guest failed: {g['error']}")
        if (g.get("app") == "pingpong" and g.get("size") == size
                and g.get("engine") == engine and "rtt_ns" in g):
            return g
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: not done after {timeout} s: {g}")
        status.set(f"{label}: {g.get('sent', 0)}/{count} round trips")
        time.sleep(0.1)


def summarize(rows: list[dict], key_fields: tuple[str, ...]) -> list[dict]:
    out = []
    for key in sorted({tuple(r[k] for k in key_fields) for r in rows}):
        runs = [r for r in rows if tuple(r[k] for k in key_fields) == key]
        e = dict(zip(key_fields, key))
        e["rtt_us"] = {p: _util.median([r["rtt_us"][p] for r in runs])
                       for p in PCTS + ("min", "mean", "max")}
        e["runs"] = len(runs)
        if "sent" in runs[0]:
            e.update({k: sum(r[k] for r in runs) for k in ("sent", "received", "lost")})
        out.append(e)
    return out


def table(emu, efd, floor):
    from rich.table import Table
    t = Table(title="round-trip time, microseconds (medians of runs; engine python includes "
                    "Python's per-packet overhead, engine c does not)", title_justify="left")
    for c in ("what", "size", *PCTS, "min", "samples"):
        t.add_column(c, justify="right")
    for e in emu:
        t.add_row(f"emu vhost-pci {e['mode']} ({e['engine']})", str(e["size"]),
                  *(f"{e['rtt_us'][p]:.1f}" for p in PCTS + ("min",)), str(e["received"]))
    for e in efd:
        t.add_row(f"eventfd {e['mode']} (C)", "-",
                  *(f"{e['rtt_us'][p]:.2f}" for p in PCTS + ("min",)),
                  str(e["samples"]))
    for size, f in floor.items():
        t.add_row("Python engine alone (one process)", size,
                  *(f"{f[p]:.2f}" for p in PCTS + ("min",)), "-")
    return t


def plot(emu, efd, out_dir):
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    labels, series = [], []
    for e in emu:
        labels.append(f"emu {e['mode']}\n{e['engine']} {e['size']} B")
        series.append(e["rtt_us"])
    for e in efd:
        labels.append(f"eventfd\n{e['mode']} (C)")
        series.append(e["rtt_us"])
    width = 0.2
    for i, p in enumerate(PCTS):
        ax.bar([k + i * width for k in range(len(labels))], [s[p] for s in series], width, label=p)
    ax.set_xticks([k + 1.5 * width for k in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("round trip, us (log)")
    ax.set_title("ping-pong round trip: emu VM1 <-> VM2 (python / c engine) vs eventfd floor")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = common.plot_path("latency", out_dir)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    ap.add_argument("--count", type=int, default=None, help="timed round trips per run")
    ap.add_argument("--sizes", default="64,1518", help="frame sizes (default 64,1518)")
    ap.add_argument("--engines", default="python,c",
                    help="VM1's round-trip engines (default python,c)")
    args = ap.parse_args(argv)
    q = args.quick
    runs = args.runs or (1 if q else 3)
    count = args.count or (2000 if q else 20000)
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = tuple(args.engines.split(","))
    from emu.testing import procs
    cpus = (0, 1) if procs.cpu_count() >= 2 else (0, 0)
    con = _util.console(args.no_live)
    emu_rows, efd_rows = [], []
    with procs.signals_raise(), tempfile.TemporaryDirectory(prefix="emu-lat-") as tmp, \
            _util.Status(con, "latency: emu ping-pong vs eventfd", args.no_live) as st:
        exe = build_eventfd(tmp)
        floor = {}
        for size in sizes:
            st.set(f"Python engine floor, {size} B ...")
            floor[str(size)] = python_floor(size, count)
            st.note(f"Python engine alone (two calls, one process) {size} B: "
                    f"p50 {floor[str(size)]['p50']:.2f} us")
        for run in range(runs):
            for mode in MODES:
                emu_rows += [{"run": run, **r} for r in run_emu(st, mode, sizes, count,
                                                                warmup=200 if not q else 50,
                                                                engines=engines)]
            if exe:
                for mode in ("spin", "block"):
                    st.set(f"eventfd {mode} ...")
                    r = run_eventfd(exe, mode, count * (5 if mode == "spin" else 1), cpus)
                    r["rtt_us"] = {k: v / 1e3 for k, v in r.pop("rtt_ns").items()}
                    st.note(f"eventfd {mode}: p50 {r['rtt_us']['p50']:.2f} us, "
                            f"p99 {r['rtt_us']['p99']:.2f} us")
                    efd_rows.append({"run": run, **r})
    emu = summarize(emu_rows, ("mode", "engine", "size"))
    efd = summarize(efd_rows, ("mode",))
    for e in efd:
        e["samples"] = sum(r["samples"] for r in efd_rows if r["mode"] == e["mode"])
    spin = next((e for e in efd if e["mode"] == "spin"), None)
    for e in emu:
        if spin and spin["rtt_us"]["p50"]:
            e["p50_vs_eventfd_spin"] = e["rtt_us"]["p50"] / spin["rtt_us"]["p50"]
    path = common.write_json("latency", {
        "quick": q, "runs": runs, "count": count, "sizes": sizes, "cpus": list(cpus),
        "engines": list(engines),
        "note": "engine 'python' drives the round trip from Python: it includes Python's "
                "per-packet overhead (tx_post + rx_sink through cffi); engine 'c' is one C "
                "call per round trip (emu_drv_pingpong), timed inside C",
        "emu": emu, "eventfd": efd, "python_floor_us": floor,
        "raw": {"emu": emu_rows, "eventfd": efd_rows},
        "eventfd_built": exe is not None}, args.out)
    png = plot(emu, efd, args.out)
    con.print(table(emu, efd, floor))
    con.print(f"wrote {path} and {png}")
    bad = [e for e in emu if e["lost"] or e["received"] != e["sent"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
