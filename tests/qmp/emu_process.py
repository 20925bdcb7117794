"""How tests start "the emu process" (``python -m emu``, the real
launcher) and QEMU 7.2 beside it, with a QMP monitor."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from emu.testing import orphans

EMU_CMD = [sys.executable, "-m", "emu"]

QEMU_CMD = ["qemu-system-x86_64"]


def start(cmd: list[str], args: list[str], **kw) -> subprocess.Popen:
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return orphans.popen(cmd + args, **kw)       # dies with the test run


def wait_for_path(path: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Wait for the process; kill it if it does not exit (then fail loudly)."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        for f in (proc.stdout, proc.stderr, proc.stdin):
            if f:
                f.close()
