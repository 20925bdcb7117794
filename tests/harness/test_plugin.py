"""The launcher's guarantees, checked with a VM that misbehaves on purpose
(tests/harness/fake_vm.py), and the plugin as a user sees it (an inner
pytest run)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from emu.testing.launch import VMFactory, _group_alive, _pid_alive, binary_from, created_paths

pytestmark = pytest.mark.usefixtures("no_fd_leak")

FAKE = [sys.executable, os.path.join(os.path.dirname(__file__), "fake_vm.py")]
FAST = {"quit_timeout": 0.5, "term_timeout": 0.5}


def fake_env(modes: str) -> dict[str, str]:
    return {**os.environ, "FAKE_VM": modes}


def test_binary_selection(monkeypatch):
    monkeypatch.delenv("EMU_BINARY", raising=False)
    assert binary_from() == [sys.executable, "-m", "emu"]
    monkeypatch.setenv("EMU_BINARY", "qemu-system-x86_64")
    assert binary_from() == ["qemu-system-x86_64"]
    assert binary_from("/opt/py -m emu") == ["/opt/py", "-m", "emu"]
    assert binary_from(["a b"]) == ["a b"]


def test_created_paths_are_the_listening_sockets_and_the_pidfile():
    args = ["-chardev", "socket,id=c0,path=/r/a,,b,server=on,wait=off",
            "-chardev", "socket,id=c1,path=/r/client",                 # the peer's
            "-chardev", "backend=socket,id=c2,path=/r/c,server",
            "-qmp", "unix:/r/q,server=on,wait=off", "-qmp", "unix:/r/harness",
            "-pidfile", "/r/vm.pid", "-name", "x"]
    assert created_paths(args) == ["/r/a,b", "/r/c", "/r/q", "/r/vm.pid"]


def test_a_polite_vm_leaves_no_problem():
    with VMFactory(FAKE) as f:
        vm = f([], env=fake_env(""), **FAST)
        assert vm.cmd("query-status") == {}
        assert f.close() == []
        assert vm.exitcode == 0


def test_a_stubborn_vm_is_killed_and_its_litter_removed():
    f = VMFactory(FAKE)
    sock, pidfile = f.path("vp.sock"), f.path("vm.pid")
    vm = f(["-chardev", f"socket,id=c0,path={sock},server=on", "-pidfile", pidfile],
           env=fake_env("stubborn,litter"), **FAST)
    pid = vm.pid
    shm = f"/dev/shm/emu-{pid}-ram-fake"
    assert os.path.exists(sock) and os.path.exists(shm)
    problems = f.close()
    assert problems == [
        "vm1: still running 0.5 s after quit",
        "vm1: ignored SIGTERM for 0.5 s",
        f"vm1: left {sock} behind (removed)",
        f"vm1: left {pidfile} behind (removed)",
        f"vm1: left shared memory {shm} behind (removed)",
    ]
    assert vm.exitcode == -9
    assert not _pid_alive(pid)
    assert not os.path.exists(shm) and not os.path.exists(f.dir)


def test_an_orphan_in_the_process_group_is_killed_and_reported():
    f = VMFactory(FAKE)
    vm = f([], env=fake_env("orphan"), **FAST)
    pid = vm.pid
    problems = f.close()
    assert problems == [f"vm1: processes left in group {pid} (killed)"]
    assert vm.exitcode == 0
    assert not _group_alive(pid)      # (init may not have reaped the zombie yet)


INNER = '''
import os

def test_fails_and_shows_vm_stderr(emu_vm):
    assert emu_vm.cmd("query-status") == {}
    assert False, "on purpose"

def test_teardown_reports_a_stubborn_vm(emu_vm_factory):
    emu_vm_factory([], env={**os.environ, "FAKE_VM": "stubborn"},
                   quit_timeout=0.5, term_timeout=0.5)
'''


@pytest.mark.parametrize("how", ["option", "env"])
def test_plugin_in_a_pytest_run(tmp_path, how):
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    binary = " ".join(FAKE)
    cmd = [sys.executable, "-m", "pytest", "-p", "emu.testing.pytest_plugin", "-p",
           "no:cacheprovider", "-q", str(tmp_path / "test_inner.py")]
    env = {**os.environ, "FAKE_VM": ""}
    if how == "option":
        cmd[3:3] = ["--emu-binary", binary]
    else:
        env["EMU_BINARY"] = binary
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    out = run.stdout
    assert run.returncode == 1, out
    assert "1 failed, 1 passed, 1 error" in out
    # the failing test's report carries its VM's stderr
    assert "emu vm1 (pid" in out and "fake_vm: pid" in out
    # the stubborn VM fails the test at teardown, with what was done about it
    assert "ERROR at teardown of test_teardown_reports_a_stubborn_vm" in out
    assert "emu teardown: vm1: still running 0.5 s after quit; vm1: ignored SIGTERM for 0.5 s" in out
