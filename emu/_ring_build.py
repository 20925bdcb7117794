"""cffi builder for emu._ring (API mode).  Used by setup.py's cffi_modules."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
# the cdef is the public part of each header, between the markers: the
# split engine (_ring.h) and the packed rings it switches to (_ring_packed.h)
for header in ("_ring.h", "_ring_packed.h"):
    with open(os.path.join(HERE, header)) as f:
        text = f.read()
    ffibuilder.cdef(text.split("/* CDEF-BEGIN */")[1].split("/* CDEF-END */")[0])

_extra = os.environ.get("EMU_RING_CFLAGS", "").split()
ffibuilder.set_source(
    "emu._ring",
    '#include "_ring.c"\n#include "_ring_packed.c"',
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=gnu11", "-fno-strict-aliasing"] + _extra,
    extra_link_args=[a for a in _extra if a.startswith("-fsanitize")],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
