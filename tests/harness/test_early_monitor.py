"""The monitor greets before the heavy imports (emu.launcher.early), and
every way that can go wrong ends as QEMU's would: a command line that does
not parse, a signal before the machine is up, forms the prescan leaves to
the parser, a path that appears only once it listens."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.usefixtures("no_fd_leak")

BASE = ["-S", "-display", "none", "-nodefaults", "-machine", "none"]


def spawn_pair(binary, args, **kw):
    ours, theirs = socket.socketpair()
    p = subprocess.Popen([*binary, *args, "-chardev", f"socket,id=mon,fd={theirs.fileno()}",
                          "-mon", "chardev=mon,mode=control"], pass_fds=[theirs.fileno()],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    theirs.close()
    ours.settimeout(60)
    return p, ours


def test_the_greeting_comes_before_the_parser_is_imported(emu_binary, tmp_path):
    log = tmp_path / "startup.log"
    p, sock = spawn_pair(emu_binary, BASE + ["-trace", "emu_startup", "-D", str(log)])
    f = sock.makefile("rwb")
    try:
        assert b'"QMP"' in f.readline()
        f.write(b'{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n{"execute":"quit"}\n')
        f.flush()
        assert json.loads(f.readline()) == {"return": {}}
        assert json.loads(f.readline())["return"]["status"] == "prelaunch"
    finally:
        f.close()
        sock.close()
    assert p.wait(60) == 0
    p.stdout.close()
    p.stderr.close()
    # "emu_startup PHASE N.N ms"
    phases = [line.split(" ", 1)[1].rsplit(" ", 2)[0] for line in log.read_text().splitlines()]
    assert phases[:3] == ["entry", "greeted", "parsed"]
    assert phases[-1] == "machine started"


def test_nothing_heavy_is_imported_to_greet():
    code = ("import sys; import emu.launcher.early; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('asyncio', 'dataclasses', 'typing', 'numpy', 'emu'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in ("asyncio", "dataclasses", "numpy")]
    assert not [m for m in loaded if m.startswith(("emu.cli", "emu.config", "emu.machine"))]


def test_a_line_that_does_not_parse_after_the_greeting_leaves_nothing(emu_binary, tmp_path):
    # socketpair: greeted, then EOF and QEMU's error and exit status
    p, sock = spawn_pair(emu_binary, BASE + ["-device", "bogus"])
    f = sock.makefile("rb")
    assert b'"QMP"' in f.readline()
    assert f.readline() == b""
    f.close()
    sock.close()
    assert p.wait(60) == 1
    assert p.stderr.read() == b"emu: -device bogus: 'bogus' is not a valid device model name\n"
    p.stdout.close()
    p.stderr.close()
    # a listening monitor: its socket file is gone again
    path = tmp_path / "q.sock"
    r = subprocess.run([*emu_binary, *BASE, "-qmp", f"unix:{path},server=on,wait=off", "-m", "5k"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Parameter 'size' expects a positive multiple of 4096" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_signal_before_the_machine_is_up_ends_the_process_cleanly(emu_binary, tmp_path):
    path = tmp_path / "q.sock"
    p = subprocess.Popen([*emu_binary, *BASE, "-qmp", f"unix:{path},server=on,wait=off"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 60
    while True:
        try:
            s.connect(str(path))
            break
        except OSError:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.001)
    s.settimeout(60)
    f = s.makefile("rb")
    assert b'"QMP"' in f.readline()
    p.send_signal(signal.SIGTERM)           # the machine may well not exist yet
    assert p.wait(60) == 0                  # as QEMU: a termination signal is a shutdown
    f.close()
    s.close()
    assert p.stderr.read() == b""
    p.stderr.close()
    assert not path.exists()


@pytest.mark.parametrize("qmp", [
    "unix:{p},server,nowait",                   # short forms: left to the parser
    "unix:{p},server=on,wait=off",              # the prescan's form
])
def test_both_ways_to_a_listening_monitor_answer_alike(emu_vm_factory, qmp):
    path = emu_vm_factory.path("m.sock")
    vm = emu_vm_factory(BASE + ["-qmp", qmp.format(p=path)], monitor=True)
    from emu.testing.launch import monitor_client, wait_for_path
    wait_for_path(path, vm)
    with monitor_client(path) as c:
        c.connect(negotiate=True)
        assert c.cmd("query-status")["status"] == "prelaunch"
        chardevs = {d["label"]: d["filename"] for d in c.cmd("query-chardev")}
        assert chardevs["compat_monitor0"] == f"unix:{path},server=on"


def test_a_listening_path_appears_only_once_it_accepts(tmp_path):
    from emu.unixsock import listen_unix, remove_owned
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)                            # a socket nobody listens on: replaced
    stale.close()
    sock, owned = listen_unix(path)
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)                         # never ECONNREFUSED once the path is there
        c.close()
        assert os.listdir(tmp_path) == ["s.sock"]   # no temporary name left
    finally:
        sock.close()
        remove_owned(owned)
    assert not os.path.exists(path)
    (tmp_path / "regular").write_text("x")
    with pytest.raises(OSError) as e:
        listen_unix(str(tmp_path / "regular"))
    assert e.value.strerror == "Address already in use"
