"""Real emu processes for the hostile tests: start one from a QEMU-style
command line, talk QMP to it, and look at what the kernel says it holds
(/proc/PID/fd, /proc/PID/maps, VmRSS).

Nothing here is clever on purpose: a blocking QMP client that keeps the
events it reads past, and a process whose stdout+stderr go to a log file
the tests search for the error messages they expect.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from emu.testing import orphans

MAC1 = "52:54:00:00:00:01"
MAC3 = "52:54:00:00:00:03"


class QmpError(Exception):
    pass


class Qmp:
    """A blocking QMP client (negotiated); events read while waiting for a
    reply are kept in ``events``."""

    def __init__(self, path: str, timeout: float = 15.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.rfile = self.sock.makefile("rb")
        self.events: list[dict] = []
        self.greeting = self._read()
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        line = self.rfile.readline()
        if not line:
            raise EOFError("QMP connection closed")
        return json.loads(line)

    def execute(self, command: str, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            m = self._read()
            if "event" in m:
                self.events.append(m)
            elif "error" in m:
                raise QmpError(f"{command}: {m['error']}")
            else:
                return m["return"]

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


class Emu:
    """``python -m emu -name NAME ARGS... -qmp unix:...`` in ``run_dir``."""

    def __init__(self, name: str, args: list[str], run_dir: str, *, start_timeout: float = 30.0):
        self.name = name
        self.run_dir = run_dir
        self.qmp_path = os.path.join(run_dir, f"{name}.qmp")
        self.log_path = os.path.join(run_dir, f"{name}.log")
        self._log = open(self.log_path, "ab")
        self.argv = [sys.executable, "-P", "-m", "emu", "-name", name, *args,
                     "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        self.proc = orphans.popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.qmp: Qmp | None = None
        deadline = time.monotonic() + start_timeout
        while self.qmp is None:
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.qmp = Qmp(self.qmp_path)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"{name}: no QMP at {self.qmp_path}") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- monitor ---------------------------------------------------------------------------
    def execute(self, command: str, **arguments):
        return self.qmp.execute(command, **arguments)

    def stats(self) -> dict:
        return self.execute("query-emu-stats")

    def device(self, dev_id: str) -> dict:
        for d in self.stats()["devices"]:
            if d["id"] == dev_id:
                return d
        raise KeyError(dev_id)

    def queue(self, dev_id: str, name: str) -> dict:
        for q in self.device(dev_id)["queues"]:
            if q["name"] == name:
                return q
        return {}

    def guest(self) -> dict:
        return self.stats().get("guest", {})

    def events(self, name: str | None = None) -> list[dict]:
        self.execute("query-status")           # everything sent before its reply is in now
        return [e for e in self.qmp.events if name is None or e["event"] == name]

    def wait(self, predicate, timeout: float = 15.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: timed out waiting for {what or predicate}")
            time.sleep(0.05)

    # -- what the kernel says -------------------------------------------------------------------
    def fds(self) -> dict[int, str]:
        out = {}
        base = f"/proc/{self.pid}/fd"
        for f in os.listdir(base):
            try:
                out[int(f)] = os.readlink(f"{base}/{f}")
            except OSError:
                pass
        return out

    def maps(self) -> list[str]:
        with open(f"/proc/{self.pid}/maps") as f:
            return f.read().splitlines()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # -- ending ---------------------------------------------------------------------------------
    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(15)
            self._close_qmp()
            self._log.close()

    def quit(self, timeout: float = 20.0) -> int:
        """QMP quit, then wait; SIGKILL if it does not go."""
        if self.proc.poll() is None:
            try:
                self.execute("quit")
            except (OSError, EOFError, QmpError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        self._close_qmp()
        self._log.close()
        return self.proc.returncode

    def _close_qmp(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None


def memory_args(size: str = "128M", backend: str = "shm") -> list[str]:
    return ["-m", size, "-object", f"memory-backend-{backend},id=mem,size={size}",
            "-machine", "memory-backend=mem"]


def vm2_args(socks: list[str], guest: str = "vhost-pci-net,app=echo,mode=interrupt",
             device_props: str = "", mem: str = "128M") -> list[str]:
    """VM2: one vhost-pci-net device per socket (vp0, vp1...), listening."""
    args = memory_args(mem)
    for i, path in enumerate(socks):
        args += ["-chardev", f"socket,id=c{i},path={path},server=on,wait=off",
                 "-device", f"vhost-pci-net,chardev=c{i},id=vp{i}{device_props}"]
    return args + ["-guest", guest]


def vm1_args(sock: str, guest: str = "virtio-net,app=gen,size=64,rate=2000,mode=interrupt",
             reconnect: int = 1, mac: str = MAC1, mem: str = "128M",
             netdev_props: str = "", device_props: str = "") -> list[str]:
    """VM1: virtio-net-pci over a vhost-user netdev that connects to ``sock``."""
    return memory_args(mem) + [
        "-chardev", f"socket,id=c0,path={sock}" + (f",reconnect={reconnect}" if reconnect else ""),
        "-netdev", f"vhost-user,id=n0,chardev=c0{netdev_props}",
        "-device", f"virtio-net-pci,netdev=n0,id=net0,mac={mac}{device_props}",
        "-guest", guest]


def peer_mappings(emu: Emu, marker: str) -> list[str]:
    """Mappings of files whose name contains ``marker`` (a peer's memfd)."""
    return [m for m in emu.maps() if marker in m]


def wait_file(path: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
