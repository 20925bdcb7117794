"""libvirt's command line for a QEMU 7.2 VM with a vhost-user NIC, run as
libvirt runs it: the monitor socket and the log fd passed in, ``-S``, then
``cont`` over QMP; the NIC's peer is an emu VM2."""
from __future__ import annotations

import os
import re
import socket

import pytest

from emu.testing.launch import monitor_client, vm2_args, wait_for_path, wait_until

from .libvirt_line import UUID, libvirt_args

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def test_a_libvirt_vm_runs(emu_vm_factory):
    run = emu_vm_factory.dir
    vhost = emu_vm_factory.path("vhost0.sock")
    vm2 = emu_vm_factory(vm2_args(vhost, ram="64M"), name="vm2")
    wait_for_path(vhost, vm2)
    # what libvirt prepares: the monitor's listening socket, virtlogd's end for the serial log
    mon_path = emu_vm_factory.path("monitor.sock")
    mon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mon.bind(mon_path)
    mon.listen(1)
    log_path = emu_vm_factory.path("serial0.log")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.set_inheritable(log_fd, True)
        args = libvirt_args(monitor_fd=mon.fileno(), log_fd=log_fd, vhost_sock=vhost, run_dir=run)
        vm1 = emu_vm_factory(args, name="vm1", monitor=False, pass_fds=(mon.fileno(), log_fd))
    finally:
        mon.close()
        os.close(log_fd)
    with monitor_client(mon_path) as qmp:
        qmp.connect(negotiate=True)
        assert qmp.cmd("query-status")["status"] == "prelaunch"
        assert qmp.cmd("query-uuid") == {"UUID": UUID}
        assert qmp.cmd("query-name") == {"name": "vm1"}
        chardevs = {c["label"]: c["filename"] for c in qmp.cmd("query-chardev")}
        assert chardevs["charserial0"].startswith("pty:/dev/pts/")
        assert qmp.cmd("cont") == {}
        # the NIC's vhost-user peer is served and traffic goes round
        vm2.event_wait("VHOST_USER_CONNECTED", 30)
        wait_until(lambda: qmp.cmd("query-emu-stats").get("guest", {}).get("received", 0) > 0,
                   timeout=60, what="echoed packets in VM1")
        pci = qmp.cmd("query-pci")[0]["devices"]
        nic = next(d for d in pci if d["qdev_id"] == "net0")
        assert (nic["slot"], nic["id"]["vendor"]) == (3, 0x1AF4)       # addr 0x3, as libvirt put it
    # the serial port's copy reached "virtlogd" through /dev/fdset/0
    wait_until(lambda: b"app gen: started" in open(log_path, "rb").read(), timeout=30,
               what="the serial log")
    # every ignored option said so, with -msg timestamp=on's prefix
    err = vm1.stderr_text()
    for opt in ("-sandbox on,", "-rtc base=utc", "-boot strict=on", "-audiodev ", "-object {\"qom-type\":\"secret\""):
        assert re.search(r"^\d{4}-\d\d-\d\dT[\d:.]+Z emu: " + re.escape(opt) + r".*: info: ", err, re.M), \
            (opt, err)


def test_the_libvirt_line_parses_and_says_what_it_ignores(tmp_path):
    from emu.cli import parse_args
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        cfg = parse_args(libvirt_args(monitor_fd=w, log_fd=w, vhost_sock=str(tmp_path / "v.sock"),
                                      run_dir=str(tmp_path)))
    finally:
        os.close(r)
        os.close(w)
    assert (cfg.name, cfg.uuid, cfg.machine_type, cfg.start_paused, cfg.no_shutdown) == (
        "vm1", UUID, "pc-i440fx-7.2", True, True)
    assert cfg.ram.backend == "memfd" and cfg.ram.share and cfg.ram_size == 256 << 20
    assert cfg.msg_timestamp and cfg.fdsets == {0: [(w, "serial0-log")]}
    assert cfg.chardev("charserial0").logfile == "/dev/fdset/0"
    assert [d.id for d in cfg.devices] == ["net0"] and cfg.devices[0].addr.slot == 3
    assert cfg.serials[0].chardev == "charserial0"
    notes = [m for m in cfg.messages if ": info: " in m]
    assert len(notes) >= 6 and not [m for m in cfg.messages if ": info: " not in m]


@pytest.mark.parametrize("arg, error", [
    ("fd=1,set=0", "fd cannot be a standard I/O stream"),
    ("set=0", "fd option is required and must be non-negative"),
    ("fd=987,set=0", "fd is not valid or already in use"),
    ("fd=FD", "set option is required and must be non-negative"),
])
def test_add_fd_checks_as_qemu(arg, error):
    from emu.cli import CommandLineError, parse_args
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        arg = arg.replace("FD", str(w))
        with pytest.raises(CommandLineError) as e:
            parse_args(["-add-fd", arg])
        assert str(e.value) == f"-add-fd {arg}: {error}"
        # an fd that is close-on-exec was not passed: QEMU refuses it too
        os.set_inheritable(w, False)
        with pytest.raises(CommandLineError, match="fd is not valid or already in use"):
            parse_args(["-add-fd", f"fd={w},set=1"])
    finally:
        os.close(r)
        os.close(w)


def test_cont_while_the_machine_is_still_starting(emu_vm_factory):
    # libvirt sends cont as soon as the monitor answers; the machine may still
    # wait for its netdev's back-end (reconnect=: QEMU waits for the first one too)
    sock = emu_vm_factory.path("late.sock")
    vm1 = emu_vm_factory(["-S", "-m", "64M", "-chardev", f"socket,id=c0,path={sock},reconnect=1",
                          "-netdev", "vhost-user,id=n0,chardev=c0",
                          "-device", "virtio-net-pci,netdev=n0",
                          "-guest", "virtio-net,app=gen,size=64,count=0"], name="vm1")
    assert vm1.cmd("cont") == {}
    assert vm1.cmd("query-status")["status"] == "running"
    emu_vm_factory(vm2_args(sock, ram="64M"), name="vm2")
    wait_until(lambda: vm1.cmd("query-emu-stats").get("guest", {}).get("received", 0) > 0,
               timeout=60, what="traffic once the late back-end came")
