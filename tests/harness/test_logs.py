"""Every ``-d`` item and trace event emu lists writes what it names, in
QEMU's formats, to ``-D FILE`` (checked by content, in real runs)."""
from __future__ import annotations

import json
import logging
import re
import subprocess

import pytest

from emu import trace
from emu.testing.launch import vm1_args, vm2_args, wait_for_path, wait_until

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_log(path: str, pattern: str, timeout: float = 30.0) -> str:
    rx = re.compile(pattern, re.M)
    wait_until(lambda: rx.search(read(path)), timeout=timeout, what=f"{pattern!r} in {path}")
    return rx.search(read(path)).group(0)


def test_d_qmp_logs_requests_responses_and_events(emu_vm_factory):
    log = emu_vm_factory.path("qmp.log")
    vm = emu_vm_factory(["-S", "-machine", "none", "-display", "none", "-d", "qmp", "-D", log])
    vm.cmd("query-status")
    vm.cmd("cont")
    label = f"{vm.name}-mon"
    wait_log(log, rf'^handle_qmp_command mon {label} req: {{"execute": "query-status"')
    wait_log(log, rf'^monitor_qmp_respond mon {label} resp: {{"return": {{"status": "prelaunch"')
    wait_log(log, r'^monitor_protocol_event_emit event=RESUME data=null$')
    wait_log(log, rf'^monitor_qmp_respond mon {label} resp: {{"timestamp": .*"event": "RESUME"')


def test_trace_lines_carry_thread_and_time_with_msg_timestamp(emu_vm_factory):
    log = emu_vm_factory.path("t.log")
    vm = emu_vm_factory(["-S", "-machine", "none", "-display", "none", "-msg", "timestamp=on",
                         "-trace", "enable=handle_qmp_command", "-D", log])
    vm.cmd("query-name")
    wait_log(log, r"^\d+@\d+\.\d{6}:handle_qmp_command mon \S+ req: .*query-name.*$")
    assert "monitor_qmp_respond" not in read(log)          # only the event asked for


def test_msg_timestamp_prefixes_emus_messages(emu_binary, tmp_path):
    r = subprocess.run([*emu_binary, "-msg", "timestamp=on", "-sandbox", "on", "-device", "bogus"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    # QEMU's error_report() prefix: ISO 8601 UTC with microseconds
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z emu: -device bogus: "
                        r"'bogus' is not a valid device model name\n", r.stderr), r.stderr


def test_d_pci_and_serial_trace_the_guests_accesses(emu_vm_factory):
    log = emu_vm_factory.path("pci.log")
    emu_vm_factory(vm2_args(emu_vm_factory.path("vp.sock"), ram="64M")
                   + ["-serial", "null", "-d", "pci", "-trace", "serial_write", "-D", log])
    # firmware's enumeration and BAR sizing of vhost-pci-net at 00:02.0
    wait_log(log, r"^pci_cfg_read vp0 00:02\.0 @0x0 -> 0x1af4$")
    wait_log(log, r"^pci_cfg_write vp0 00:02\.0 @0x10 <- 0xffffffff$")
    # the driver's register accesses through its BARs
    wait_log(log, r"^pci_bar_(read|write) vp0 00:02\.0 BAR\d @0x[0-9a-f]+ size \d (->|<-) 0x[0-9a-f]+$")
    # the console: the divisor latch, then 'e' of "emu guest: ..."
    wait_log(log, r"^serial_write write addr 0x03 val 0x80$")
    wait_log(log, r"^serial_write write addr 0x00 val 0x65$")


def test_d_vhost_user_and_its_events_with_a_peer(emu_vm_factory):
    log2, log1 = emu_vm_factory.path("vm2.log"), emu_vm_factory.path("vm1.log")
    sock = emu_vm_factory.path("vp.sock")
    emu_vm_factory(vm2_args(sock, ram="64M") + ["-d", "vhost_user", "-D", log2], name="vm2")
    wait_for_path(sock)
    emu_vm_factory(vm1_args(sock, ram="64M", params={"size": 64, "count": 0})
                   + ["-trace", "vhost_user_read", "-trace", "vhost_user_write", "-D", log1],
                   name="vm1")
    # VM2 (the back-end) decodes what it receives and sends
    wait_log(log2, r"^vhost_user_message vm2 rx GET_FEATURES flags:0x1 fds:0 $")
    wait_log(log2, r"^vhost_user_message vm2 rx SET_MEM_TABLE flags:0x\d+ fds:1 \{.*'regions'")
    wait_log(log2, r"^vhost_user_message vm2 tx GET_FEATURES flags:0x5 fds:0 \{'value': '0x[0-9a-f]+'\}$")
    wait_log(log2, r"^vhost_user_connected device vp0 chardev c0$")
    # VM1 (the front-end) in QEMU's own format: GET_FEATURES is request 1
    wait_log(log1, r"^vhost_user_write req:1 flags:0x1$")
    wait_log(log1, r"^vhost_user_read req:1 flags:0x5$")


def test_wire_log_json_goes_to_the_trace_file(emu_vm_factory):
    wire = emu_vm_factory.path("wire.jsonl")
    sock = emu_vm_factory.path("vp.sock")
    emu_vm_factory(vm2_args(sock, ram="64M") + ["-trace", f"vhost_user_wire,file={wire}"], name="vm2")
    wait_for_path(sock)
    emu_vm_factory(vm1_args(sock, ram="64M", params={"size": 64, "count": 0}), name="vm1")
    wait_log(wire, r'"request":"SET_VRING_KICK"')
    recs = [json.loads(line) for line in read(wire).splitlines()]
    assert {"t", "dir", "request", "flags", "size", "payload", "nfds"} <= set(recs[0])


@pytest.fixture
def process_logging(tmp_path):
    """logs.setup() changes process-wide logging: give it back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    pci = logging.getLogger("emu.pci")
    saved_pci = (list(pci.handlers), pci.level, pci.propagate)
    yield
    trace.LOG.close()
    trace.enable()
    root.handlers[:], root.level = saved
    pci.handlers[:], pci.level, pci.propagate = saved_pci


def test_d_guest_errors_logs_every_one(tmp_path, process_logging, capsys):
    from emu.cli import parse_args
    from emu.launcher import logs
    from emu.pci.errors import GuestErrors
    log = tmp_path / "g.log"
    logs.setup(parse_args(["-d", "guest_errors", "-D", str(log)]))
    errors = GuestErrors("vp0")
    for i in range(3):
        errors.record("queue-select", f"queue {100 + i} does not exist")
    lines = log.read_text().splitlines()
    assert lines == [f"emu.pci: vp0: guest error (queue-select): queue {100 + i} does not exist"
                     for i in range(3)]
    assert capsys.readouterr().err == ""            # not also on stderr


def test_without_d_guest_errors_only_the_first_of_a_kind_warns(tmp_path, process_logging, capsys):
    from emu.cli import parse_args
    from emu.launcher import logs
    from emu.pci.errors import GuestErrors
    logs.setup(parse_args([]))
    errors = GuestErrors("vp0")
    for _ in range(3):
        errors.record("queue-select", "queue 100 does not exist")
    assert capsys.readouterr().err == ("emu: emu.pci: vp0: guest error (queue-select): "
                                       "queue 100 does not exist\n")


def test_every_listed_item_and_event_is_declared_and_cheap_when_off():
    # -d help lists exactly the items emu implements; each names real events
    assert set(trace.ITEMS) == {"guest_errors", "unimp", "vhost_user", "pci", "qmp"}
    for _, (_, events) in trace.ITEMS.items():
        assert set(events) <= set(trace.EVENTS)
    listed = trace.events_help().splitlines()
    assert listed == list(trace.EVENTS_DECLARED)
    # an event that is off formats nothing: a bad argument list is never looked at
    ev = trace.event("serial_read")
    assert ev.on is False
    ev("not", "numbers", "at all")
