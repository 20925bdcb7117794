"""The monitor of a whole emu process, driven the way harnesses drive QEMU."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys


from .emu_process import EMU_CMD, start, stop, wait_for_path
from .test_qmp_clients import event_wait, legacy

BASE = ["-display", "none", "-nodefaults"]


def test_the_qemumachine_way_fd_passed_socketpair():
    ours, theirs = socket.socketpair()
    proc = start(EMU_CMD, BASE + ["-chardev", f"socket,id=mon,fd={theirs.fileno()}",
                                  "-mon", "chardev=mon,mode=control"], pass_fds=[theirs.fileno()])
    theirs.close()
    with legacy(ours) as qmp:
        qmp.connect()
        assert qmp.cmd("query-status")["status"] == "running"
        assert qmp.cmd("query-chardev")[0]["label"] == "mon"
        assert qmp.cmd("quit") == {}
        assert event_wait(qmp, "SHUTDOWN")["data"] == {"guest": False, "reason": "host-qmp-quit"}
    ours.close()
    assert stop(proc) == 0


def test_the_qemu72_qemumachine_way_vm_connects_to_the_harness(tmp_path):
    path = str(tmp_path / "mon.sock")
    with legacy(path, server=True) as qmp:
        proc = start(EMU_CMD, BASE + ["-chardev", f"socket,id=mon,path={path}", "-mon", "chardev=mon,mode=control"])
        qmp.accept(timeout=10)
        assert qmp.cmd("query-status")["running"] is True
        qmp.cmd("quit")
        event_wait(qmp, "SHUTDOWN")
    assert stop(proc) == 0


def test_qmp_unix_server_with_async_client(tmp_path):
    import asyncio

    from qemu.qmp import QMPClient

    path = str(tmp_path / "qmp.sock")
    proc = start(EMU_CMD, BASE + ["-S", "-name", "vm2", "-qmp", f"unix:{path},server=on,wait=off"])
    wait_for_path(path, proc)

    async def talk():
        qmp = QMPClient("t")
        await qmp.connect(path)
        assert await qmp.execute("query-status") == {"status": "prelaunch", "singlestep": False, "running": False}
        assert await qmp.execute("query-name") == {"name": "vm2"}
        await qmp.execute("cont")
        await qmp.execute("quit")
        names = []
        while "SHUTDOWN" not in names:
            names.append((await asyncio.wait_for(qmp.events.get(), 5))["event"])
        assert names == ["RESUME", "SHUTDOWN"]
        try:
            await qmp.disconnect()
        except EOFError:        # the VM went away after quit, as QEMU does
            pass

    asyncio.run(talk())
    assert stop(proc) == 0
    assert not os.path.exists(path), "the monitor socket file is removed at exit"


def test_sigterm_emits_shutdown_host_signal(tmp_path):
    path = str(tmp_path / "qmp.sock")
    proc = start(EMU_CMD, BASE + ["-qmp", f"unix:{path},server=on,wait=off"])
    wait_for_path(path, proc)
    with legacy(path) as qmp:
        qmp.connect()
        proc.send_signal(signal.SIGTERM)
        assert event_wait(qmp, "SHUTDOWN")["data"] == {"guest": False, "reason": "host-signal"}
    assert stop(proc) == 0


def test_wait_on_holds_start_up_for_the_first_client(tmp_path):
    path = str(tmp_path / "qmp.sock")
    proc = start(EMU_CMD, BASE + ["-qmp", f"unix:{path},server=on"])
    wait_for_path(path, proc)
    with legacy(path) as qmp:
        qmp.connect()
        qmp.cmd("quit")
    assert stop(proc) == 0


def test_stdio_monitor():
    proc = start(EMU_CMD, BASE + ["-qmp", "stdio"], stdin=subprocess.PIPE)
    out, err = proc.communicate(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status", "id": 1}\n'
                                b'{"execute": "quit"}\n', timeout=10)
    lines = [json.loads(x) for x in out.decode().split("\r\n") if x]
    assert "QMP" in lines[0]
    assert lines[2] == {"return": {"status": "running", "singlestep": False, "running": True}, "id": 1}
    assert [m.get("event") for m in lines[3:]] == ["SHUTDOWN", None]
    assert proc.returncode == 0 and err == b""


def test_command_line_error_exits_1_and_leaves_nothing(tmp_path):
    path = tmp_path / "qmp.sock"
    proc = start(EMU_CMD, ["-qmp", f"unix:{path},server=on,wait=off", "-device", "virtio-net-pci,bar=1"])
    assert proc.wait(10) == 1
    assert proc.stderr.read() == b"emu: -device virtio-net-pci,bar=1: Property 'virtio-net-pci.bar' not found\n"
    stop(proc)
    assert list(tmp_path.iterdir()) == []


def test_monitor_setup_error_exits_1(tmp_path):
    missing = tmp_path / "nobody.sock"
    proc = start(EMU_CMD, ["-qmp", f"unix:{missing}"])
    assert proc.wait(10) == 1
    assert proc.stderr.read().decode() == (f"emu: -qmp unix:{missing}: Failed to connect to '{missing}': "
                                           "No such file or directory\n")
    stop(proc)


def test_modules_before_the_monitor_are_import_light():
    # everything the process imports before its monitors listen; of the guest,
    # only the declarative registry (emu/guest/__init__.py imports nothing)
    code = ("import sys, emu.cli, emu.qmp, emu.keyval, emu.config, emu.launcher; "
            "heavy = [m for m in ('numpy', '_cffi_backend', 'cffi', 'posix_ipc', 'dpkt', 'emu.memory', "
            "'emu.ring', 'emu.vhost_user', 'emu.pci', 'emu.virtio', 'emu.machine', 'emu.netdev') "
            "if m in sys.modules]; "
            "heavy += [m for m in sys.modules if m.startswith('emu.guest.') and m != 'emu.guest.registry']; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout
    assert out.strip() == "[]"


def test_vhost_user_backend_does_not_load_numpy():
    # VM2's start-up imports the back-end before its first answer; numpy (~60 ms
    # on this machine) is for the guest's bulk views and the packed inflight set-up
    code = "import sys, emu.netdev, emu.vhost_user.backend; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout
    assert out.strip() == "False"


def test_greeting_comes_before_any_command():
    """The monitor greets on a socket passed as an fd, before the client says anything.

    How quickly is a benchmark's question (benchmarks/startup.py, beside QEMU
    7.2 in the same run), not a test's: a timed assertion fails on a busy
    machine.  What the greeting must not wait for is pinned by
    test_modules_before_the_monitor_are_import_light."""
    ours, theirs = socket.socketpair()
    proc = start(EMU_CMD, BASE + ["-chardev", f"socket,id=mon,fd={theirs.fileno()}",
                                  "-mon", "chardev=mon,mode=control"], pass_fds=[theirs.fileno()])
    theirs.close()
    ours.settimeout(60)
    greeting = json.loads(ours.recv(4096).split(b"\r\n")[0])
    assert set(greeting["QMP"]) == {"version", "capabilities"}
    ours.sendall(b'{"execute": "qmp_capabilities"}{"execute": "quit"}')
    assert stop(proc) == 0
    ours.close()
