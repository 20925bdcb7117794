"""What the fuzz targets share: the atheris entry point, fd and mapping
counts, and guard-paged memory.

Each target is a script (``python tests/fuzz/fuzz_X.py -atheris_runs=N
[CORPUS]``, libFuzzer flags pass through) and a module whose ``run_one``
the bounded CI test (``test_fuzz_bounded.py``) also calls directly.
``--seed-corpus DIR`` writes the target's seed inputs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import os

PAGE = mmap.PAGESIZE


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_set() -> set[int]:
    """This process's open fds (the listing's own fd left out)."""
    fds = {int(f) for f in os.listdir("/proc/self/fd")}
    return {fd for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")}


def map_count() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def main(argv: list[str], run_one, seeds, imports, harness: dict | None = None,
         instrument: tuple[str, ...] = ()) -> None:
    """The script entry point shared by every target.  ``instrument`` names
    functions of the target script (``harness``: its globals) that atheris
    should instrument too: the script itself is not an import."""
    if len(argv) > 2 and argv[1] == "--seed-corpus":
        imports()
        os.makedirs(argv[2], exist_ok=True)
        for i, blob in enumerate(seeds()):
            with open(os.path.join(argv[2], f"seed{i}"), "wb") as f:
                f.write(blob)
        return
    import atheris
    logging.disable(logging.CRITICAL)      # refusals and guest errors come by the thousand
    with atheris.instrument_imports(include=["emu"]):
        imports()
    for name in instrument:
        harness[name] = atheris.instrument_func(harness[name])
    atheris.Setup(argv, harness["run_one"] if harness else run_one)
    atheris.Fuzz()


# -- guard-paged memory ------------------------------------------------------------------
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class GuardedRegions:
    """Regions ``(gpa, size)`` in one PROT_NONE reservation, each with an
    inaccessible page before and after it, so gpa-adjacent regions are not
    host-adjacent: any access outside a region is a SIGSEGV (a crash the
    fuzzer reports), even without AddressSanitizer."""

    def __init__(self, layout: list[tuple[int, int]]):
        self.total = PAGE + sum(size + PAGE for _, size in layout)
        base = _libc.mmap(None, self.total, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of the reservation failed")
        self.base = base
        self.regions: list[tuple[int, int, int]] = []     # (gpa, size, host)
        at = base + PAGE
        for gpa, size in layout:
            if _libc.mprotect(at, size, mmap.PROT_READ | mmap.PROT_WRITE):
                raise OSError(ctypes.get_errno(), "mprotect failed")
            self.regions.append((gpa, size, at))
            at += size + PAGE

    def host(self, gpa: int, length: int = 1) -> int:
        for g, size, h in self.regions:
            if g <= gpa and gpa + length <= g + size:
                return h + gpa - g
        raise ValueError(f"0x{gpa:x}+{length} is not inside one region")

    def write(self, gpa: int, data: bytes) -> None:
        ctypes.memmove(self.host(gpa, len(data)), data, len(data))

    def read(self, gpa: int, length: int) -> bytes:
        return ctypes.string_at(self.host(gpa, length), length)

    def clear(self) -> None:
        for _, size, h in self.regions:
            ctypes.memset(h, 0, size)

    def gpa_to_host(self, gpa: int, length: int) -> int:
        """The GuestMemory method DriverQueue uses."""
        return self.host(gpa, length)

    def close(self) -> None:
        if self.base:
            _libc.munmap(self.base, self.total)
            self.base = 0

