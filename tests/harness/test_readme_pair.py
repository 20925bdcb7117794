"""The README's two-VM command lines, exactly, as two emu processes.

VM2 echoes what VM1's generator sends through the vhost-pci window; the
counters are read the way a harness reads them, with ``query-emu-stats``
on the README's own ``-qmp unix:`` monitors (the launcher adds its fd
monitor beside them).  Each RAM backend: shm, memfd, a shared file.
"""
from __future__ import annotations

import glob
import os
import shlex

import pytest

from emu.testing.launch import monitor_client, vm1_args, vm2_args, wait_for_path, wait_until

pytestmark = pytest.mark.usefixtures("no_fd_leak")

COUNT = 1_000_000
SIZE = 64

README_VM2 = ("-name vm2 -m 256M -object {mem} -machine memory-backend=mem "
              "-chardev socket,id=c0,path={sock},server=on,wait=off "
              "-device vhost-pci-net,chardev=c0,id=vp0 "
              "-guest vhost-pci-net,app=echo -qmp unix:{q2},server=on,wait=off")
README_VM1 = ("-name vm1 -m 256M -object {mem} -machine memory-backend=mem "
              "-chardev socket,id=c0,path={sock} -netdev vhost-user,id=n0,chardev=c0 "
              "-device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01 "
              "-guest virtio-net,app=gen,size=64,count=1000000 -qmp unix:{q1},server=on,wait=off")
BACKENDS = {
    "shm": "memory-backend-shm,id=mem,size=256M",
    "memfd": "memory-backend-memfd,id=mem,size=256M",
    "file": "memory-backend-file,id=mem,size=256M,mem-path={dir},share=on",
}


def queues(stats: dict, device: str) -> dict[str, dict]:
    dev = next(d for d in stats["devices"] if d["id"] == device)
    return {q["name"]: q for q in dev["queues"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_readme_two_vms(emu_vm_factory, backend):
    f = emu_vm_factory
    sock, q1, q2, mem_dir = f.path("vp.sock"), f.path("q1"), f.path("q2"), f.path("mem")
    os.mkdir(mem_dir)
    mem = BACKENDS[backend].format(dir=mem_dir)
    argv2 = shlex.split(README_VM2.format(mem=mem, sock=sock, q2=q2))
    argv1 = shlex.split(README_VM1.format(mem=mem, sock=sock, q1=q1))
    # the helpers build the same lines
    md = mem_dir if backend == "file" else None
    assert vm2_args(sock, backend=backend, mem_path=md, qmp=q2) == argv2
    assert vm1_args(sock, backend=backend, mem_path=md, qmp=q1) == argv1

    vm2 = f(argv2, name="vm2")
    wait_for_path(sock, vm2)
    vm1 = f(argv1, name="vm1")

    with monitor_client(q1) as mon1, monitor_client(q2) as mon2:
        mon1.connect()
        mon2.connect()
        done = wait_until(lambda: mon1.cmd("query-emu-stats").get("guest", {})
                          .get("received", 0) >= COUNT and mon1.cmd("query-emu-stats"),
                          timeout=60, what=f"VM1 receiving {COUNT} echoes")
        s1, s2 = done, mon2.cmd("query-emu-stats")

    assert s1["guest"] == {"app": "gen", "paused": False, "sent": COUNT, "received": COUNT}
    assert s2["guest"]["app"] == "echo" and s2["guest"]["echoed"] == COUNT
    # VM1's queues as its driver counts them, VM2's view of VM1's queues:
    # everything sent came back, nothing dropped or in error.
    q1s, q2s = queues(s1, "net0"), queues(s2, "vp0")
    for q in (q1s["tx0"], q1s["rx0"], q2s["peer0"], q2s["peer1"]):
        assert (q["packets"], q["bytes"], q["drops"], q["errors"]) == (COUNT, COUNT * SIZE, 0, 0), q
    # a vhost-pci echo uses the window only: VM2's own queues stay idle
    assert q2s["rx0"]["packets"] == q2s["tx0"]["packets"] == 0

    assert vm1.cmd("quit") == {}
    assert vm1.event_wait("SHUTDOWN")["data"]["reason"] == "host-qmp-quit"
    assert vm1.wait() == 0
    assert vm2.event_wait("VHOST_USER_DISCONNECTED")["data"]["device"] == "vp0"
    assert vm2.cmd("quit") == {}
    vm2.event_wait("SHUTDOWN")
    assert vm2.wait() == 0

    # nothing left behind: sockets, shm objects, the file backend's RAM
    assert sorted(os.listdir(f.dir)) == ["mem", "vm1.stderr", "vm1.stdout",
                                         "vm2.stderr", "vm2.stdout"]
    assert os.listdir(mem_dir) == []
    assert glob.glob(f"/dev/shm/emu-{vm1.pid}-*") == glob.glob(f"/dev/shm/emu-{vm2.pid}-*") == []
    assert vm1.stderr_text() == "" and vm2.stderr_text() == ""
