#!/usr/bin/env python3
"""Run every qos-test path of emu's devices against emu and write the table
of docs/qtest.md (between its qos-table markers).

    .venv/bin/python scripts/qos-table.py            # runs, rewrites docs/qtest.md
    .venv/bin/python scripts/qos-table.py --check    # runs, prints, writes nothing

The paths are those of QEMU 7.2's qos-test, as the reference QEMU's probe
lists them (``qos-test -l``), whose device node is a device type emu has
(``qom-list-types``'s concrete devices, emu/qom/catalog.py).  Each one is
run with ``QTEST_QEMU_BINARY=.venv/bin/emu-system-x86_64 qos-test -p
PATH`` and classed pass / skip (QEMU's own ``g_test_skip``; never counted
as a pass) / fail with the reason (emu's error line, libqtest's assertion,
or a timeout).  A path emu's own probe does not list fails too.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from emu.qom.catalog import registry  # noqa: E402
from emu.testing.qos import FAIL, PASS, SKIP, QosResult, list_paths, run_path  # noqa: E402
from emu.testing.qtest import emu_binary  # noqa: E402

DOC = os.path.join(ROOT, "docs", "qtest.md")
BEGIN, END = "<!-- qos-table:begin -->", "<!-- qos-table:end -->"
BUILD = os.path.join(ROOT, "scripts", "build-qemu-tests.sh")


def qemu_tests() -> dict[str, str]:
    out = subprocess.run([BUILD, "--reference"], capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def device_of(path: str) -> str | None:
    """The device node of a PCI path: the segment after ``pci-bus``."""
    parts = path.split("/")
    return parts[parts.index("pci-bus") + 1] if "pci-bus" in parts[:-1] else None


def emu_devices() -> set[str]:
    return {t.name for t in registry().list_types("device")}


def git_revision() -> str:
    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True).stdout
    rev = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return rev + ("+changes" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:300]


def table(results: list[QosResult], prefix: str) -> list[str]:
    lines = ["| path (under `" + prefix + "`) | result | reason |", "| --- | --- | --- |"]
    for r in results:
        lines.append(f"| `{r.path[len(prefix) + 1:]}` | {r.status} | {cell(r.reason) or '-'} |")
    return lines


def common_prefix(paths: list[str]) -> str:
    prefix = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return prefix if prefix != "/" else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=None, help="QTEST_QEMU_BINARY (default: emu-system-x86_64)")
    ap.add_argument("--check", action="store_true", help="print the table, do not write docs/qtest.md")
    ap.add_argument("--jobs", type=int, default=3,
                    help="paths run at once (a failing path mostly waits on libqtest's timeouts)")
    args = ap.parse_args()
    binary = args.binary or emu_binary()[0]
    paths = qemu_tests()
    qos, reference = paths["QOS_TEST"], paths["QEMU_REFERENCE"]
    with tempfile.TemporaryDirectory(prefix="qos-table-") as tmp:
        all_paths = list_paths(qos, reference, cwd=tmp)
        mine = emu_devices()
        selected = [p for p in all_paths if device_of(p) in mine]
        available = set(list_paths(qos, binary, cwd=tmp))

        def run(path: str) -> QosResult:
            if path not in available:
                return QosResult(path, FAIL, "qos-test's probe of emu did not make it available",
                                 None, "", "")
            with tempfile.TemporaryDirectory(dir=tmp) as cwd:
                r = run_path(qos, binary, path, cwd=cwd)
            print(f"{r.status:4} {path}  {r.reason}", file=sys.stderr, flush=True)
            return r
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(run, selected))
    counts = {s: sum(r.status == s for r in results) for s in (PASS, SKIP, FAIL)}
    prefix = common_prefix(selected)
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    qos_version = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(qos)))))
    block = [BEGIN,
             f"Generated {when} by `scripts/qos-table.py` (emu {git_revision()}, qos-test of "
             f"QEMU {qos_version}): {len(results)} paths for emu's devices "
             f"({', '.join(sorted(d for d in mine if any(device_of(p) == d for p in selected)))}) "
             f"of the {len(all_paths)} the reference lists; **{counts[PASS]} pass, "
             f"{counts[SKIP]} skip, {counts[FAIL]} fail**.",
             "", *table(results, prefix), END]
    text = "\n".join(block)
    if args.check:
        print(text)
        return 0 if counts[PASS] == len(results) else 1
    with open(DOC) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} section")
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(DOC, "w") as f:
        f.write(head + text + tail)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
