"""emu VMs as real processes for benchmarks: placed, guarded, measured.

Launching, QMP and teardown are :mod:`emu.testing.launch`'s
(:class:`~emu.testing.launch.VMProcess`: QEMUMachine-style, the monitor on
a socketpair, ``quit`` -> SIGTERM -> SIGKILL with a leftover check).  What
a benchmark needs on top:

* **placement** -- ``taskset -c CPUS``: on a 2-core machine each busy loop
  gets a core of its own, the same layout DPDK's ``-l``/``--main-lcore``
  gives testpmd;
* **no orphans** -- every child is started by :mod:`emu.testing.orphans`
  (PR_SET_PDEATHSIG, forked by a thread that lives as long as the
  process): a harness killed by SIGKILL (no ``finally`` runs) still takes
  its busy-polling VMs with it; ``setpriv --pdeathsig KILL`` in
  :func:`command` does the same for what is run by other means;
* **accounting** -- CPU seconds (utime + stime of every thread) and memory
  (VmRSS and its parts) of any pid, from /proc;
* **set-ups** -- argument lists of the benchmark VMs (N queue pairs, a VM2
  with two vhost-pci devices);
* :class:`Fleet` -- every process of one run (emu VMs, testpmd, ...) torn
  down together on return, error, Ctrl-C, SIGTERM or interpreter exit.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import sys
from typing import Any, Sequence

from emu.testing.launch import VMFactory, VMProcess, memory_args, wait_for_path

CLK_TCK = os.sysconf("SC_CLK_TCK")
EMU = (sys.executable, "-m", "emu")


# -- /proc accounting ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (live and exited threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the comm field: state is field 3, utime 14, stime 15 (proc(5))
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and its split (RssAnon, RssFile, RssShmem) in KiB.  Guest RAM
    is shared memory: it shows in RssShmem once touched."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def command(argv: Sequence[str], cpus: Sequence[int] | None = None,
            guard: bool = True) -> list[str]:
    """``argv`` pinned to ``cpus`` and killed with its parent."""
    out = list(argv)
    if cpus and shutil.which("taskset"):
        out = ["taskset", "-c", ",".join(str(c) for c in cpus)] + out
    if guard and shutil.which("setpriv"):
        out = ["setpriv", "--pdeathsig", "KILL"] + out
    return out


# -- argument lists --------------------------------------------------------------------------------

def _guest(driver: str, app: str, params: dict | None) -> str:
    return ",".join([driver, f"app={app}"] + [f"{k}={v}" for k, v in (params or {}).items()])


def vhost_pci_args(socks: Sequence[str], app: str, params: dict | None = None, *,
                   queues: int = 1, ram: str = "256M", backend: str = "shm",
                   name: str = "vm2") -> list[str]:
    """A VM2: one vhost-pci-net device listening on each of ``socks``
    (``forward`` needs two), ``queues`` pairs each, guest ``app``."""
    args = ["-name", name] + memory_args(backend, ram)
    for i, sock in enumerate(socks):
        args += ["-chardev", f"socket,id=c{i},path={sock},server=on,wait=off",
                 "-device", f"vhost-pci-net,chardev=c{i},id=vp{i}"
                 + (f",queues={queues}" if queues > 1 else "")]
    return args + ["-guest", _guest("vhost-pci-net", app, params)]


def virtio_net_args(sock: str, app: str, params: dict | None = None, *, queues: int = 1,
                    ram: str = "256M", backend: str = "shm", name: str = "vm1",
                    mac: str = "52:54:00:00:00:01", wait_qmp: str | None = None) -> list[str]:
    """A VM1 (or VM3): virtio-net-pci whose vhost-user back-end listens at
    ``sock``.  ``wait_qmp``: an extra ``-qmp unix:PATH,wait=on`` monitor the
    machine waits for before it starts (to see its first events)."""
    mq = queues > 1
    args = (["-name", name] + memory_args(backend, ram)
            + ["-chardev", f"socket,id=c0,path={sock}",
               "-netdev", "vhost-user,id=n0,chardev=c0" + (f",queues={queues}" if mq else ""),
               "-device", f"virtio-net-pci,netdev=n0,mac={mac}" + (",mq=on" if mq else ""),
               "-guest", _guest("virtio-net", app, params)])
    if wait_qmp:
        args += ["-qmp", f"unix:{wait_qmp},server=on,wait=on"]
    return args


def driver_params(size: int, mode: str = "poll") -> dict:
    """virtio-net driver keys that let VM1 send ``size``-byte frames: a TX
    buffer holds a whole frame plus the 12-byte header; RX spreads big
    frames over mergeable buffers."""
    p: dict[str, Any] = {"mode": mode}
    if size + 12 > 2048:
        p["tx_buf_size"] = (size + 12 + 1023) // 1024 * 1024
        p["buf_size"] = 4096
    return p


# -- one run's processes ----------------------------------------------------------------------

_LIVE: list["Fleet"] = []


@atexit.register
def _close_all() -> None:
    for fleet in list(_LIVE):
        fleet.close()


class Fleet:
    """The processes of one benchmark run, in one short run directory.

    emu VMs come from :meth:`emu`; anything else with a ``stop()`` (a
    :class:`emu.testing.dpdk.Testpmd`) joins with :meth:`adopt`.  Closing
    stops them in reverse order and removes the directory; it runs on
    ``with`` exit, from :func:`atexit`, and (see :func:`signals_raise`) on
    SIGTERM/SIGHUP."""

    def __init__(self, prefix: str = "emu-bench-", pin: bool = True):
        self.factory = VMFactory(prefix=prefix)
        self.dir = self.factory.dir
        self.pin = pin and cpu_count() >= 2
        self.others: list[Any] = []
        self.problems: list[str] = []
        _LIVE.append(self)

    def path(self, name: str) -> str:
        return self.factory.path(name)

    def cpus(self, *cpus: int) -> list[int] | None:
        """``cpus`` when placement is on (2+ cores), else None."""
        return list(cpus) if self.pin else None

    def emu(self, args: Sequence[str], *, name: str, cpus: Sequence[int] | None = None,
            binary: Sequence[str] = EMU) -> VMProcess:
        """Launch an emu VM (returns once its monitor greeted us)."""
        return self.factory(list(args), name=name, binary=command(binary, cpus))

    def wait_socket(self, path: str, vm: VMProcess) -> None:
        wait_for_path(path, vm)

    def adopt(self, proc: Any) -> Any:
        self.others.append(proc)
        return proc

    def stop(self, vm: VMProcess) -> None:
        """Tear one VM down now (the rest stay)."""
        vm.shutdown()
        self.problems += vm.problems
        with contextlib.suppress(ValueError):
            self.factory.vms.remove(vm)

    def close(self) -> list[str]:
        if self not in _LIVE:
            return self.problems
        _LIVE.remove(self)
        for proc in reversed(self.others):
            with contextlib.suppress(Exception):
                proc.stop()
        self.others = []
        self.problems += self.factory.close()
        return self.problems

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def signals_raise():
    """SIGTERM and SIGHUP raise SystemExit in the main thread (as SIGINT
    raises KeyboardInterrupt), so ``finally``/``with`` clean-ups run."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
