"""Every ``help`` form prints and exits 0, in a real process, with a
timeout: none may start a VM.  A reader that goes away ends the process
by SIGPIPE, quietly, as it ends QEMU."""
from __future__ import annotations

import signal
import subprocess

import pytest

# (argv, a line the text must hold: QEMU's format where QEMU has the form)
FORMS = [
    (["-cpu", "help"], "Available CPUs:"),
    (["-cpu", "?"], "x86 qemu64 "),
    (["-vga", "help"], "none                 no graphic card"),
    (["-display", "help"], "Available display backend types:"),
    (["-machine", "help"], "Supported machines are:"),
    (["-machine", "q35,help"], "pc-q35-7.2-machine options:"),
    (["-machine", "pc,help"], "pc-i440fx-7.2-machine options:"),
    (["-chardev", "help"], "Available chardev backend types:"),
    (["-chardev", "socket,help"], "chardev options:"),
    (["-chardev", "file,help"], "  path=<str>"),
    (["-netdev", "help"], "Available netdev backend types:"),
    (["-netdev", "vhost-user,help"], "  chardev=<id>"),
    (["-object", "help"], "List of user creatable objects:"),
    (["-object", "memory-backend-memfd,help"], "memory-backend-memfd options:"),
    (["-object", "filter-dump,help"], "  netdev=<id>"),
    (["-accel", "help"], "Accelerators supported in QEMU binary:"),
    (["-d", "help"], "Log items (comma separated):"),
    (["-trace", "help"], "handle_qmp_command"),
    (["-device", "help"], 'name "virtio-net-pci", bus PCI'),
    (["-device", "virtio-net-pci,help"], "virtio-net-pci options:"),
    (["-device", "isa-serial,help"], "  chardev=<id>"),
    (["-guest", "help"], "Guest drivers"),
    (["-msg", "help"], "  timestamp=<on|off>"),
    (["-rtc", "help"], "  base=<str>"),
    (["-boot", "help"], "  strict=<on|off>"),
    (["-overcommit", "help"], "  mem-lock=<on|off>"),
    (["-help"], "usage: emu [options]"),
    (["-version"], "QEMU emulator version 7.2.0"),
]


def run(binary, argv, **kw):
    return subprocess.run([*binary, *argv], capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize("argv, line", FORMS, ids=[" ".join(a) for a, _ in FORMS])
def test_help_form_prints_and_exits_0(emu_binary, argv, line):
    r = run(emu_binary, argv, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert line in r.stdout
    assert r.stderr == ""


@pytest.mark.peers
def test_machine_help_marks_the_default_as_qemu_does(emu_binary):
    lines = run(emu_binary, ["-machine", "help"]).stdout.splitlines()
    # pc is the default, as in QEMU 7.2 (whose own list is longer)
    assert "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)" in lines
    assert "pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)" in lines
    assert "q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)" in lines
    assert sum(line.endswith("(default)") for line in lines) == 1
    qemu = run(["qemu-system-x86_64"], ["-machine", "help"]).stdout.splitlines()
    assert set(lines) <= set(qemu), set(lines) - set(qemu)


@pytest.mark.parametrize("argv", [["-trace", "help"], ["-device", "help"], ["-d", "help"]])
def test_a_closed_pipe_ends_quietly(emu_binary, argv):
    p = subprocess.Popen([*emu_binary, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                     # the reader is gone before anything is written
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(60) == -signal.SIGPIPE          # as QEMU: killed by SIGPIPE
    assert err == b""                              # no traceback


def test_help_output_can_be_captured_by_a_shell(emu_binary):
    # $(emu -cpu help) used to start a VM that never exited
    r = subprocess.run(["sh", "-c", 'out=$("$@" -cpu help) && echo "$out" | head -1', "sh",
                        *emu_binary], capture_output=True, text=True, timeout=60)
    assert r.stdout == "Available CPUs:\n"
