"""A VM that misbehaves, to test the launcher's teardown.

Speaks just enough QMP on ``-chardev socket,id=ID,fd=N`` (greeting, then
``{"return": {}}`` to every command).  ``FAKE_VM`` in the environment says
how it misbehaves (comma-separated):

* ``stubborn``: ignores ``quit`` and SIGTERM;
* ``orphan``: forks a child that outlives it (same process group);
* ``litter``: creates every listening socket path of its command line and a
  ``/dev/shm/emu-PID-*`` object, and never removes them.

Without any, ``quit`` makes it exit 0.  It writes one line to stderr.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

from emu.testing.launch import created_paths


def monitor_fd(argv: list[str]) -> int:
    for opt, value in zip(argv, argv[1:]):
        if opt == "-chardev" and ",fd=" in value:
            return int(value.split(",fd=")[1].split(",")[0])
    raise SystemExit("fake_vm: no fd monitor")


def requests(sock: socket.socket):
    """JSON objects as they come (clients need not end them with a newline)."""
    decoder, buf = json.JSONDecoder(), ""
    while data := sock.recv(4096):
        buf += data.decode()
        while buf.strip():
            try:
                msg, end = decoder.raw_decode(buf.lstrip())
            except ValueError:
                break
            buf = buf.lstrip()[end:]
            yield msg


def main() -> int:
    argv = sys.argv[1:]
    modes = set(filter(None, os.environ.get("FAKE_VM", "").split(",")))
    print(f"fake_vm: pid {os.getpid()} modes {sorted(modes)}", file=sys.stderr, flush=True)
    if "stubborn" in modes:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "orphan" in modes and os.fork() == 0:
        os.closerange(3, 1024)
        time.sleep(600)
        os._exit(0)
    keep = []
    if "litter" in modes:
        for path in created_paths(argv):
            if path.endswith(".pid"):
                with open(path, "w") as f:
                    f.write(f"{os.getpid()}\n")
            else:
                s = socket.socket(socket.AF_UNIX)
                s.bind(path)
                keep.append(s)
        with open(f"/dev/shm/emu-{os.getpid()}-ram-fake", "wb") as f:
            f.write(b"\0" * 4096)
    mon = socket.socket(fileno=monitor_fd(argv))
    mon.sendall(b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
                b'"package": "fake"}, "capabilities": []}}\r\n')
    for msg in requests(mon):
        answer = {"return": {}}
        if "id" in msg:
            answer["id"] = msg["id"]
        mon.sendall(json.dumps(answer).encode() + b"\r\n")
        if msg.get("execute") == "quit" and "stubborn" not in modes:
            return 0
    while "stubborn" in modes:
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
