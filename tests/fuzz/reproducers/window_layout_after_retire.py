"""Reproducer (not collected by pytest): the vhost-pci-net window, class 1.

A second SET_MEM_TABLE that every check before the mapper accepts (sizes
within max-mem, fds that can be mapped) but whose *layout* does not fit the
window (each region starts on a 2 MiB slot: seven 4 KiB regions cost 14 MiB
of padding) is refused by PeerWindow.map_table -- after _WindowMapper.map
has already retired the current table.  The Backend, told the map failed,
resumes the running rings on the old table, whose window pages are gone:
the peer is no longer served (seen: status 1, then no echo), and a data
path that did not stop in time reads PROT_NONE memory.

    .venv/bin/python tests/fuzz/reproducers/window_layout_after_retire.py

prints VM2's fate ("VM2 alive, the old table still serves" since the fix:
PeerWindow.prepare checks the layout before the current table is retired;
the test of it is tests/hostile/test_refused_mem_table.py's
layout-larger-than-the-window).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from emu.vhost_user.messages import FrontendRequest as F, MemoryRegion, MemoryTable  # noqa: E402
from tests.hostile.evil_frontend import EchoPeer                                     # noqa: E402
from tests.hostile.procs import Emu, vm2_args                                        # noqa: E402

MiB, GiB = 1 << 20, 1 << 30


def main() -> int:
    run = tempfile.mkdtemp(prefix="emu-r-", dir="/tmp")
    sock = os.path.join(run, "vp.sock")
    vm2 = Emu("vm2", vm2_args([sock], guest="vhost-pci-net,app=echo,mode=poll"), run)
    fds = []
    try:
        peer = EchoPeer(sock)
        peer.roundtrip(1)                                   # rings run on the first table
        sizes = [4096] * 7 + [4 * GiB - 4 * MiB]            # sum < 4 GiB (max-mem): accepted
        regions, gpa, uaddr = [], 0, 0x7F00_0000_0000
        for size in sizes:
            fd = os.memfd_create("emu-repro", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)                          # sparse: costs nothing
            fds.append(fd)
            regions.append(MemoryRegion(gpa, size, uaddr, 0))
            gpa += size + 4 * MiB
            uaddr += size + 4 * MiB
        # keep ring memory mapped in the new table: put the first table's region first
        first = peer.ram.regions[0]
        regions[0] = MemoryRegion(first.gpa, first.size, first.uaddr, 0)
        os.close(fds[0])
        fds[0] = os.dup(first.fd)
        regions = [regions[0]] + [MemoryRegion(r.gpa + 64 * MiB, r.size, r.uaddr, 0)
                                  for r in regions[1:]]
        status = peer.fe.status(F.SET_MEM_TABLE, MemoryTable(tuple(regions)), tuple(fds))
        print("second SET_MEM_TABLE status", status)
        time.sleep(1.0)
        if not vm2.alive():
            print("VM2 died:", vm2.proc.returncode, vm2.log()[-1500:])
            return 1
        try:
            peer.roundtrip(2)
        except TimeoutError as e:
            print(f"VM2 alive but the refused table took the old one with it: {e}")
            print(vm2.log()[-1500:])
            return 1
        print("VM2 alive, the old table still serves")
        return 0
    finally:
        for fd in fds:
            os.close(fd)
        if vm2.alive():
            vm2.kill()


if __name__ == "__main__":
    sys.exit(main())
