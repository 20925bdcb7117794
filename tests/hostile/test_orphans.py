"""A harness killed from outside takes its children with it (class 10).

A harness script starts, the ways the test suite does, an emu VM through
``emu.testing.launch`` (from the main thread, and from a thread that ends
at once: the parent-death signal follows the forking thread), one through
``tests/hostile/procs.Emu``, a testpmd through ``emu.testing.dpdk`` and a
QEMU through ``emu.testing.orphans``; then it is SIGKILLed (no ``finally``,
no atexit).  Every child must be gone -- before, they went on polling at
full speed for good.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HARNESS = textwrap.dedent("""
    import json, os, sys, tempfile, threading, time
    sys.path.insert(0, {root!r})
    from emu.testing import orphans
    from emu.testing.dpdk import Testpmd
    from emu.testing.launch import VMFactory
    from tests.hostile.procs import Emu, vm2_args

    run = tempfile.mkdtemp(prefix="emu-o-", dir="/tmp")
    factory = VMFactory(prefix="emu-o-")
    vm_main = factory(["-m", "64M", "-display", "none"], name="main")
    box = []
    t = threading.Thread(target=lambda: box.append(
        factory(["-m", "64M", "-display", "none"], name="thread")))
    t.start()
    t.join()                                  # the forking thread is gone now
    hostile = Emu("vm2", vm2_args([os.path.join(run, "vp.sock")]), run)
    testpmd = Testpmd("vhost", os.path.join(run, "dpdk.sock"), "rxonly").start()
    qemu = orphans.popen(["qemu-system-x86_64", "-machine", "none", "-nodefaults",
                          "-display", "none", "-monitor", "none", "-serial", "none"],
                         start_new_session=True)
    time.sleep(1.0)                           # the thread-forked VM must outlive its thread
    print(json.dumps({{"main": vm_main.pid, "thread": box[0].pid, "hostile": hostile.pid,
                       "testpmd": testpmd.proc.pid, "qemu": qemu.pid,
                       "thread_vm_alive": box[0].is_running()}}), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_children_die_with_a_sigkilled_harness(tmp_path):
    script = tmp_path / "harness.py"
    script.write_text(HARNESS.format(root=ROOT))
    harness = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    pids = {}
    try:
        line = harness.stdout.readline()
        assert line, harness.stderr.read().decode(errors="replace")[-3000:]
        pids = json.loads(line)
        assert pids.pop("thread_vm_alive"), "a VM forked by a thread died with that thread"
        assert all(_alive(p) for p in pids.values()), pids
        os.kill(harness.pid, signal.SIGKILL)        # no finally, no atexit: the kernel only
        harness.wait(30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = {name: p for name, p in pids.items() if _alive(p)}
        assert not left, f"orphans: {left}"
    finally:
        if harness.poll() is None:
            os.killpg(harness.pid, signal.SIGKILL)
            harness.wait()
        for p in pids.values():                     # never leave them behind ourselves
            if isinstance(p, int) and _alive(p):
                os.kill(p, signal.SIGKILL)
