"""Start-up beside QEMU 7.2, in the same run: exec -> QMP greeting and
exec -> first answered ``query-status``, for

* the default machine, ``-S -m 256M -nodefaults -display none``;
* a full VM2: 256 MiB of shared RAM, a vhost-pci-net device listening, its
  guest running echo (QEMU's nearest: 256 MiB shared memfd RAM and a
  virtio-net-pci NIC; QEMU's vhost-user netdev would wait for a back-end
  before greeting, emu's vhost-pci-net listens without waiting);

each over a unix-socket ``-qmp unix:PATH,server=on,wait=off`` (the client
connects as soon as the path exists) and over a QEMUMachine-style
socketpair (``-chardev socket,id=mon,fd=N -mon chardev=mon,mode=control``).
Runs alternate emu and QEMU, so both see the same machine load; each ratio
is of the two medians.  Beside each wall-clock ratio, the ratio of the CPU
time the processes had used by then (all threads, from /proc): on a busy
machine the wall clock of both stretches with the run queue, the CPU time
much less, so it says what a quiet machine would show.  Also ``QEMUMachine.launch()`` itself (QEMU's python
package from its source tree, where scripts/build-qemu-tests.sh unpacked
it), for emu and QEMU.

emu's modules are byte-compiled first (``compileall``): a start that must
compile its sources (``PYTHONDONTWRITEBYTECODE``, a fresh editable
install) pays tens of milliseconds more, and the output says whether that
was needed.  Where the time goes: docs/performance.md.

    python benchmarks/startup.py [--runs N] [--quick]
"""
from __future__ import annotations

import glob
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

QEMU = "qemu-system-x86_64"
ROOT = os.path.dirname(common.HERE)
DEFAULT = ["-S", "-m", "256M", "-nodefaults", "-display", "none"]
TRANSPORTS = ("unix -qmp", "socketpair")
TARGETS = {"greeting": 2.0, "query-status": 3.0}     # emu within Nx of QEMU


def vm2_args(run_dir: str, emu: bool) -> list[str]:
    if emu:
        return ["-m", "256M", "-object", "memory-backend-shm,id=mem,size=256M",
                "-machine", "memory-backend=mem",
                "-chardev", f"socket,id=c0,path={run_dir}/vp.sock,server=on,wait=off",
                "-device", "vhost-pci-net,chardev=c0,id=vp0", "-guest", "vhost-pci-net,app=echo",
                "-display", "none", "-nodefaults"]
    return ["-m", "256M", "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
            "-machine", "memory-backend=mem", "-device", "virtio-net-pci",
            "-display", "none", "-nodefaults"]


def cpu_ms(pid: int) -> float | None:
    """CPU time of every thread of *pid* so far (schedstat: ns on a CPU):
    unlike wall clock, not stretched by other work queued on the cores."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError):
        return None
    return total / 1e6


def _converse(f) -> float:
    """Negotiate, ask query-status; the time its answer came (events skipped)."""
    f.write(b'{"execute":"qmp_capabilities"}\n{"execute":"query-status","id":"s"}\n')
    f.flush()
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("monitor closed before query-status was answered")
        if b'"id": "s"' in line or b'"id":"s"' in line:
            return time.perf_counter()


def one_start(binary: list[str], args: list[str], transport: str) -> dict:
    """exec -> greeting and exec -> query-status answered, in ms."""
    run_dir = tempfile.mkdtemp(prefix="emu-st-")
    args = [a.replace("{run}", run_dir) for a in args]
    proc = sock = None
    try:
        if transport == "socketpair":
            ours, theirs = socket.socketpair()
            t0 = time.perf_counter()
            proc = subprocess.Popen([*binary, *args, "-chardev", f"socket,id=mon,fd={theirs.fileno()}",
                                     "-mon", "chardev=mon,mode=control"],
                                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            theirs.close()
            sock = ours
        else:
            path = os.path.join(run_dir, "qmp.sock")
            t0 = time.perf_counter()
            proc = subprocess.Popen([*binary, *args, "-qmp", f"unix:{path},server=on,wait=off"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = t0 + 30
            while True:
                try:
                    sock.connect(path)
                    break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() > deadline:
                        raise RuntimeError(f"{binary[-1]}: no monitor at {path}")
                    time.sleep(0.0002)
        sock.settimeout(30)
        f = sock.makefile("rwb")
        if b'"QMP"' not in f.readline():
            raise RuntimeError(f"{binary[-1]}: no QMP greeting")
        t_greet = time.perf_counter()
        c_greet = cpu_ms(proc.pid)
        t_status = _converse(f)
        c_status = cpu_ms(proc.pid)
        f.write(b'{"execute":"quit"}\n')
        f.flush()
        f.close()
        proc.wait(30)
        return {"greeting": (t_greet - t0) * 1e3, "query-status": (t_status - t0) * 1e3,
                "greeting_cpu": c_greet, "query-status_cpu": c_status}
    finally:
        if sock is not None:
            sock.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


_LAUNCH = """
import sys, time
from qemu.machine import QEMUMachine
binary = sys.argv[1:]
vm = QEMUMachine(binary=binary[-1], wrapper=binary[:-1], args=["-S", "-nodefaults"])
t0 = time.perf_counter(); vm.launch(); t = time.perf_counter() - t0
vm.shutdown(); print(t * 1e3)
"""


def qemu_python() -> str | None:
    """QEMU 7.2's python directory, if scripts/build-qemu-tests.sh unpacked it."""
    found = sorted(glob.glob("/var/cache/emu/qemu/*/src/python/qemu/machine"))
    return os.path.dirname(os.path.dirname(found[-1])) if found else None


def qemumachine_launch(binary: list[str], pythonpath: str) -> float:
    r = subprocess.run([sys.executable, "-c", _LAUNCH, *binary], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": pythonpath}, timeout=120)
    if r.returncode:
        raise RuntimeError(f"QEMUMachine.launch() failed: {r.stderr[-2000:]}")
    return float(r.stdout.split()[-1])


def ensure_bytecode() -> bool:
    """Byte-compile emu (compileall writes even under PYTHONDONTWRITEBYTECODE);
    True if anything had to be compiled."""
    import importlib.util
    init = os.path.join(ROOT, "emu", "__init__.py")
    missing = not os.path.exists(importlib.util.cache_from_source(init))
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "emu")],
                   capture_output=True, timeout=300)
    return missing


def measure(status, runs: int) -> dict:
    """Every case and transport, emu and QEMU alternating; medians and ratios."""
    from emu.testing import procs
    emu = list(procs.EMU)
    have_qemu = shutil.which(QEMU) is not None
    compiled = ensure_bytecode()
    cases = {"default machine (-S -m 256M -nodefaults)": (DEFAULT, DEFAULT),
             "VM2 (256 MiB, vhost-pci-net, guest)": (vm2_args("{run}", True),
                                                      vm2_args("{run}", False))}
    out: dict = {"runs": runs, "had_to_compile": compiled, "cases": {}}
    for case, (emu_args, qemu_args) in cases.items():
        for transport in TRANSPORTS:
            rows: dict[str, list[dict]] = {"emu": [], "qemu": []}
            for i in range(runs):
                status.set(f"start-up: {case}, {transport} ({i + 1}/{runs})")
                rows["emu"].append(one_start(emu, emu_args, transport))
                if have_qemu:
                    rows["qemu"].append(one_start([QEMU], qemu_args, transport))
            entry: dict = {}
            for metric in TARGETS:
                e = [r[metric] for r in rows["emu"]]
                q = [r[metric] for r in rows["qemu"]]
                ec = [r[f"{metric}_cpu"] for r in rows["emu"]]
                qc = [r[f"{metric}_cpu"] for r in rows["qemu"]]
                entry[metric] = {"emu_ms": _util.median(e), "emu_runs_ms": e,
                                 "qemu_ms": _util.median(q) if q else None, "qemu_runs_ms": q,
                                 "ratio": _util.median(e) / _util.median(q) if q else None,
                                 "emu_cpu_ms": _util.median(ec), "qemu_cpu_ms": _util.median(qc)
                                 if qc else None,
                                 "cpu_ratio": _util.median(ec) / _util.median(qc) if qc else None}
            out["cases"][f"{case}, {transport}"] = entry
            g, s = entry["greeting"], entry["query-status"]
            status.note(f"{case}, {transport}: greeting {g['emu_ms']:.0f} ms"
                        + (f" (QEMU {g['qemu_ms']:.0f}, {g['ratio']:.1f}x)" if g["qemu_ms"] else "")
                        + f", query-status {s['emu_ms']:.0f} ms"
                        + (f" (QEMU {s['qemu_ms']:.0f}, {s['ratio']:.1f}x)" if s["qemu_ms"] else ""))
    qpy = qemu_python()
    if qpy is not None:
        launch = {"emu": [], "qemu": []}
        for i in range(runs):
            status.set(f"start-up: QEMUMachine.launch() ({i + 1}/{runs})")
            launch["emu"].append(qemumachine_launch(emu, qpy))
            if have_qemu:
                launch["qemu"].append(qemumachine_launch([QEMU], qpy))
        out["qemumachine_launch"] = {
            "emu_ms": _util.median(launch["emu"]), "emu_runs_ms": launch["emu"],
            "qemu_ms": _util.median(launch["qemu"]) if launch["qemu"] else None,
            "qemu_runs_ms": launch["qemu"]}
        ql = out["qemumachine_launch"]
        status.note(f"QEMUMachine.launch(): emu {ql['emu_ms']:.0f} ms"
                    + (f", QEMU {ql['qemu_ms']:.0f} ms" if ql["qemu_ms"] else ""))
    return out


def table(data: dict):
    from rich.table import Table
    t = Table(title=f"start-up beside QEMU 7.2 (ms, median of {data['runs']} runs, same run)",
              title_justify="left")
    for c in ("case", "greeting emu", "QEMU", "ratio", "(CPU)", "target", "query-status emu",
              "QEMU", "ratio", "(CPU)", "target"):
        t.add_column(c, justify="right")
    for case, e in data["cases"].items():
        row = [case]
        for metric, goal in TARGETS.items():
            m = e[metric]
            ratio, cpu = m["ratio"], m.get("cpu_ratio")
            row += [f"{m['emu_ms']:.0f}", f"{m['qemu_ms']:.0f}" if m["qemu_ms"] else "-",
                    f"{ratio:.2f}x" if ratio else "-", f"{cpu:.2f}x" if cpu else "-",
                    ("[green]" if ratio and ratio <= goal else "[red]") + f"<= {goal:g}x"]
        t.add_row(*row)
    if "qemumachine_launch" in data:
        ql = data["qemumachine_launch"]
        t.add_row("QEMUMachine.launch()", "", "", "", "", "", f"{ql['emu_ms']:.0f}",
                  f"{ql['qemu_ms']:.0f}" if ql["qemu_ms"] else "-",
                  f"{ql['emu_ms'] / ql['qemu_ms']:.2f}x" if ql["qemu_ms"] else "-", "", "")
    return t


def main(argv=None) -> int:
    ap = _util.arg_parser(__doc__)
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 10)
    con = _util.console(args.no_live)
    with _util.Status(con, "start-up", args.no_live) as st:
        data = measure(st, runs)
    path = common.write_json("startup", data, args.out)
    con.print(table(data))
    if data["had_to_compile"]:
        con.print("note: emu's modules were not byte-compiled yet; compiled before measuring")
    con.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
