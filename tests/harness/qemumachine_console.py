"""Run by tests/harness/test_console.py in a child process whose path puts
QEMU 7.2's python package (its source tree) first: QEMU's QEMUMachine and
the qemu.qmp it was written for, as a QEMU test would use them.

    python qemumachine_console.py BINARY... -- VM2-ARGS... -- VM1-ARGS...

VM2 is launched with set_console(); the console is read with avocado's
pattern waits; VM1 is started as VM2's peer once VM2's console says its
app runs.  Prints one JSON object: the console lines, the answers seen,
VM2's exit code.
"""
import json
import socket
import subprocess
import sys
import tempfile
import time


def main(argv):
    binary, rest = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    vm2_args, vm1_args = rest[:rest.index("--")], rest[rest.index("--") + 1:]
    from qemu.machine import QEMUMachine
    import qemu.qmp
    out = {"qemu_qmp": qemu.qmp.__file__, "lines": [], "answers": {}}
    tmp = tempfile.mkdtemp(prefix="qm-")
    vm = QEMUMachine(binary=binary[-1], wrapper=binary[:-1], args=vm2_args, base_temp_dir=tmp)
    vm.set_console()
    vm.launch()
    console = vm.console_socket
    f = console.makefile("rb")

    def wait_for(pattern, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            console.settimeout(max(0.1, end - time.monotonic()))
            try:
                line = f.readline().decode(errors="replace").rstrip("\r\n")
            except socket.timeout:
                break
            out["lines"].append(line)
            if pattern in line:
                return line
        raise SystemExit(json.dumps({**out, "error": f"no {pattern!r}"}))

    def exec_command(command, pattern):
        console.sendall(command.encode() + b"\r")
        return wait_for(pattern)

    vm1 = None
    try:
        wait_for("app echo: started")
        vm1 = subprocess.Popen(binary + vm1_args, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("peer connected")
        for _ in range(300):
            line = exec_command("status", "status:")
            if int(line.split("echoed=")[1].split()[0]) > 0:
                break
            time.sleep(0.1)
        out["answers"]["set-app"] = vm.qmp("emu-set-guest-app", app="sink")
        wait_for("app sink: switched from echo")
        vm.qmp("stop")
        wait_for("app sink: paused")
        vm.qmp("cont")
        wait_for("app sink: resumed")
        out["answers"]["query-chardev"] = vm.qmp("query-chardev")
        vm.qmp("system_powerdown")
        wait_for("guest: power down")
    finally:
        f.close()
        vm.shutdown()
        if vm1 is not None:
            vm1.terminate()
            vm1.wait(30)
        out["exitcode"] = vm.exitcode()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
