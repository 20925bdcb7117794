"""Run QEMU's own qos-test (built by scripts/build-qemu-tests.sh) against a
binary and read what it says: which paths its probe makes available, and
for one path whether it passed, was skipped (QEMU's ``g_test_skip``: never
a pass) or failed, and why.

qos-test prints GLib's TAP on stdout (``ok 1 /x86_64/...``,
``ok 1 /... # SKIP reason``, ``not ok 1 /...``, ``Bail out! ...``); the
binary under test inherits its stderr, so emu's own ``emu: ...`` errors
show there beside libqtest's assertions.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

PASS, SKIP, FAIL = "pass", "skip", "fail"
#: a path that hangs is cut off after this long (libqtest's own limits are 50 s per
#: accept and 30 s per virtqueue wait; a GLib subprocess test has 180 s)
PATH_TIMEOUT = 400

_RESULT = re.compile(r"^(not ok|ok) \d+ (\S+)(?: # SKIP ?(.*))?$")


@dataclass
class QosResult:
    path: str
    status: str                 # pass | skip | fail
    reason: str
    returncode: int | None
    tap: str
    stderr: str

    def summary(self) -> str:
        return (f"{self.path}: {self.status} ({self.reason})\n--- TAP ---\n{self.tap[-3000:]}"
                f"\n--- stderr ---\n{self.stderr[-5000:]}")


def qos_env(binary: str) -> dict[str, str]:
    env = dict(os.environ, QTEST_QEMU_BINARY=binary)
    for var in ("QTEST_LOG", "QTEST_TRACE", "QTEST_STOP"):
        env.pop(var, None)
    return env


def list_paths(qos_test: str, binary: str, cwd: str | None = None, timeout: float = 300) -> list[str]:
    """``qos-test -l``: the paths the probe of ``binary`` makes available."""
    out = subprocess.run([qos_test, "-l"], capture_output=True, text=True, timeout=timeout,
                         env=qos_env(binary), cwd=cwd, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"qos-test -l failed ({out.returncode}): {out.stderr[-3000:]}")
    return [line for line in out.stdout.splitlines() if line.startswith("/")]


def parse(path: str, returncode: int | None, tap: str, stderr: str) -> QosResult:
    """The verdict on one ``qos-test -p PATH`` run."""
    results = [m for m in map(_RESULT.match, tap.splitlines()) if m]
    mine = [m for m in results if m.group(2) == path]
    bail = next((line for line in (tap + "\n" + stderr).splitlines()
                 if line.startswith("Bail out!")), None)
    if returncode == 0 and mine and all(m.group(1) == "ok" for m in mine) and bail is None:
        skipped = [m for m in mine if m.group(3) is not None]
        if skipped:
            return QosResult(path, SKIP, skipped[0].group(3) or "skipped", returncode, tap, stderr)
        return QosResult(path, PASS, "", returncode, tap, stderr)
    return QosResult(path, FAIL, _reason(returncode, mine, bail, stderr), returncode, tap, stderr)


def _reason(returncode, mine, bail, stderr: str) -> str:
    emu = [line[len("emu: "):] for line in stderr.splitlines() if line.startswith("emu: ")
           and ": info:" not in line and ": warning:" not in line]
    if emu:
        return emu[0]
    # the first failed assertion is the cause; a GLib subprocess test's parent
    # then only reports that its child failed
    errors = [line for line in stderr.splitlines()
              if line.startswith("ERROR:") and "subprocess_run_one_test" not in line]
    if errors:
        return errors[0]
    if bail is not None:
        return bail[len("Bail out! "):]
    errors = [line for line in stderr.splitlines() if "ERROR" in line or "kill_qemu" in line]
    if errors:
        return errors[0]
    if returncode is None:
        return f"no result within {PATH_TIMEOUT} s"
    if not mine:
        return f"no result for the path (exit status {returncode})"
    return f"not ok (exit status {returncode})"


def run_path(qos_test: str, binary: str, path: str, cwd: str | None = None,
             timeout: float = PATH_TIMEOUT) -> QosResult:
    """``qos-test -p PATH`` with ``QTEST_QEMU_BINARY=binary``."""
    try:
        out = subprocess.run([qos_test, "-p", path], capture_output=True, text=True,
                             timeout=timeout, env=qos_env(binary), cwd=cwd,
                             stdin=subprocess.DEVNULL)
        return parse(path, out.returncode, out.stdout, out.stderr)
    except subprocess.TimeoutExpired as e:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return parse(path, None, text(e.stdout), text(e.stderr))
