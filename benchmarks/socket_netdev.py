"""Socket netdev benchmark: frames/s through ``-netdev socket,fd=N`` between
an emu VM and a C peer on a socketpair (benchmarks/c/net_peer.c), beside
QEMU 7.2 TCG's socket netdev measured the same way in the same run.

* emu TX (guest -> peer): emu's guest ``gen`` app sends SIZE-byte frames;
  the device side of its ring (the C job) writes them on the stream; the
  peer counts the frames it reads in the window.
* emu RX (peer -> guest): the peer writes frames as fast as the stream
  takes them; the job reads them into the guest's RX ring; the guest's
  ``sink`` app counts them.  The figure is what the peer got written in
  the window (the stream back-pressures: the socket buffers hold less than
  a few ms of frames).
  Every frame written is received (checked: the guest's count over QMP).
* QEMU RX: the same peer into QEMU 7.2 (TCG) booting the test Linux guest
  (tests/peers: Debian's kernel, busybox) whose eth0 is up and drops the
  broadcasts.  Its guest does not take every frame the stream gives it
  (QEMU reads on; the guest's RX ring overflows): the figure is the rate
  written times the share the guest's kernel counted (/proc/net/dev).
  QEMU TX is not measured: the guest has no packet generator.

Sizes 64 and 1518 B; the median of the runs is reported with the range.
Writes results/socket_netdev.json and .png.

    python benchmarks/socket_netdev.py [--quick] [--runs N] [--seconds S] [--no-qemu]
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (64, 1518)
WARMUP = 1.0
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 120.0
GUEST_MARGIN = 3.0                # s the guest sleeps past the peer's window


def build_peer(tmp: str) -> str:
    gcc = shutil.which("gcc") or "gcc"
    exe = os.path.join(tmp, "net_peer")
    subprocess.run([gcc, "-O2", "-Wall", "-o", exe,
                    os.path.join(common.HERE, "c", "net_peer.c")], check=True)
    return exe


def peer(exe: str, fd: int, *args) -> subprocess.Popen:
    return subprocess.Popen([exe, args[0], str(fd), *map(str, args[1:])], pass_fds=(fd,),
                            stdout=subprocess.PIPE, text=True)


def peer_result(p: subprocess.Popen, timeout: float) -> dict:
    out, _ = p.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def qmp_stats(path: str) -> dict:
    """query-emu-stats over the emu process's monitor."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    with s, s.makefile("rw") as f:
        f.readline()
        for cmd in ("qmp_capabilities", "query-emu-stats"):
            f.write(json.dumps({"execute": cmd}) + "\n")
            f.flush()
            while True:
                reply = json.loads(f.readline())
                if "event" not in reply:
                    break
        return reply["return"]


def emu_run(exe: str, direction: str, size: int, seconds: float) -> dict:
    a, b = socket.socketpair()
    app = f"gen,size={size}" if direction == "tx" else "sink"
    tmp = tempfile.mkdtemp(prefix="emu-sockbench-")
    qmp = os.path.join(tmp, "qmp.sock")
    vm = subprocess.Popen([sys.executable, "-m", "emu", "-M", "pc", "-m", "256M",
                           "-netdev", f"socket,fd={b.fileno()},id=n0",
                           "-device", "virtio-net-pci,netdev=n0",
                           "-guest", f"virtio-net,app={app},mode=interrupt",
                           "-qmp", f"unix:{qmp},server=on,wait=off", "-display", "none"],
                          pass_fds=(b.fileno(),), cwd=ROOT, stderr=subprocess.PIPE)
    b.close()
    share = None
    try:
        if direction == "tx":
            p = peer(exe, a.fileno(), "sink", WARMUP, seconds)
            r = peer_result(p, WARMUP + seconds + 60)
        else:
            p = peer(exe, a.fileno(), "gen", size, WARMUP, seconds)
            r = peer_result(p, WARMUP + seconds + 60)
            deadline = time.monotonic() + 10           # what was written, all received?
            while time.monotonic() < deadline:
                got = qmp_stats(qmp).get("guest", {}).get("received", 0)
                if got >= r["total_frames"]:
                    break
                time.sleep(0.1)
            share = got / r["total_frames"] if r["total_frames"] else None
    finally:
        vm.terminate()
        vm.wait(30)
        vm.stderr.close()
        a.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"mpps": r["frames"] / r["seconds"] / 1e6 if r["seconds"] else 0.0,
            "frames": r["frames"], "seconds": r["seconds"], "delivered_share": share}


def qemu_run(exe: str, size: int, seconds: float) -> dict | None:
    sys.path.insert(0, ROOT)
    from tests.peers.linux_guest import initramfs, kernel_image
    a, b = socket.socketpair()
    # the guest prints /proc/net/dev once it has slept past the peer's window
    append = (f"console=ttyS0 panic=-1 loglevel=4 vt.mode=idle "
              f"vt.sleep={int(WARMUP + seconds + GUEST_MARGIN)}")
    q = subprocess.Popen([QEMU, "-machine", "pc", "-accel", "tcg", "-cpu", "max", "-m", "256M",
                          "-netdev", f"socket,id=n0,fd={b.fileno()}",
                          "-device", "virtio-net-pci,netdev=n0,romfile=",
                          "-nodefaults", "-no-user-config", "-display", "none",
                          "-serial", "stdio", "-no-reboot", "-kernel", kernel_image(),
                          "-initrd", initramfs(), "-append", append],
                         pass_fds=(b.fileno(),), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    b.close()
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:                                 # eth0 up: the guest takes frames now
            line = q.stdout.readline().decode(errors="replace")
            if "VT: eth0" in line:
                break
            if not line or time.monotonic() > deadline:
                return None
        p = peer(exe, a.fileno(), "gen", size, WARMUP, seconds)
        r = peer_result(p, WARMUP + seconds + 60)
        received = None
        deadline = time.monotonic() + GUEST_MARGIN + 30
        while time.monotonic() < deadline:        # "VT: eth0: bytes packets errs drop ..."
            line = q.stdout.readline().decode(errors="replace")
            if not line:
                break
            if line.startswith("VT:") and "eth0:" in line:
                received = int(line.split("eth0:", 1)[1].split()[1])
                break
    finally:
        q.kill()
        q.wait(30)
        q.stdout.close()
        a.close()
    share = received / r["total_frames"] if received is not None and r["total_frames"] else None
    written = r["frames"] / r["seconds"] / 1e6 if r["seconds"] else 0.0
    # QEMU's guest does not take all the stream gives it: its figure is
    # what reached the guest's kernel (/proc/net/dev) over what was written
    return {"mpps": written * share if share is not None else None, "written_mpps": written,
            "frames": r["frames"], "seconds": r["seconds"], "delivered_share": share}


def measure(status, runs: int, seconds: float, with_qemu: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_peer(tmp)
        have_qemu = with_qemu and shutil.which(QEMU) is not None
        for size in SIZES:
            for path in ("emu tx", "emu rx") + (("QEMU 7.2 TCG rx",) if have_qemu else ()):
                xs = []
                for i in range(runs):
                    status.set(f"{path} {size} B ({i + 1}/{runs})")
                    if path.startswith("emu"):
                        xs.append(emu_run(exe, path.split()[1], size, seconds))
                    else:
                        r = qemu_run(exe, size, seconds)
                        if r is not None:
                            xs.append(r)
                    _util.settle_machine()
                mpps = [x["mpps"] for x in xs if x.get("mpps") is not None]
                row = {"path": path, "size": size, "mpps": _util.median(mpps), "runs_mpps": mpps,
                       "range_mpps": _util.spread(mpps),
                       "gbps": (_util.median(mpps) or 0) * size * 8 / 1e3}
                shares = [x["delivered_share"] for x in xs if x.get("delivered_share")]
                if shares:
                    row["delivered_share"] = _util.median(shares)
                rows.append(row)
                share = (f", guest got {row['delivered_share']:.0%} of what was written"
                         if "delivered_share" in row else "")
                status.note(f"{path:>16} {size:5d} B: {row['mpps'] or 0:.3f} Mpps "
                            f"({row['gbps']:.2f} Gbit/s), runs {[round(m, 3) for m in mpps]}"
                            f"{share}")
    for row in rows:
        ref = next((r for r in rows if r["path"] == "QEMU 7.2 TCG rx" and r["size"] == row["size"]),
                   None)
        if row["path"] == "emu rx" and ref and ref["mpps"]:
            row["ratio_vs_qemu"] = row["mpps"] / ref["mpps"]
    return rows


def plot(rows, out_dir):
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    paths = list(dict.fromkeys(r["path"] for r in rows))
    width = 0.8 / max(len(paths), 1)
    for k, path in enumerate(paths):
        xs = [i + k * width for i, _ in enumerate(SIZES)]
        ys = [next((r["mpps"] or 0 for r in rows if r["path"] == path and r["size"] == s), 0)
              for s in SIZES]
        ax.bar(xs, ys, width, label=path)
    ax.set_xticks([i + width * (len(paths) - 1) / 2 for i, _ in enumerate(SIZES)])
    ax.set_xticklabels([f"{s} B" for s in SIZES])
    ax.set_ylabel("Mpps (median)")
    ax.set_yscale("log")
    ax.set_title("-netdev socket,fd=N: frames/s with a C peer on a socketpair")
    ax.legend()
    fig.tight_layout()
    fig.savefig(common.plot_path("socket_netdev", out_dir))
    plt.close(fig)


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    ap.add_argument("--no-qemu", action="store_true", help="skip QEMU 7.2 TCG")
    args = ap.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    con = _util.console(args.no_live)
    with _util.Status(con, "socket netdev throughput", args.no_live) as status:
        rows = measure(status, runs, seconds, not args.no_qemu and not args.quick)
    common.write_json("socket_netdev", {"runs": runs, "seconds": seconds, "warmup": WARMUP,
                                        "summary": rows}, args.out)
    plot(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
