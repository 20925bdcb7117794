"""cffi builder for emu._ring (API mode).  Used by setup.py's cffi_modules."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
# the engine's headers, in order; each one's public part (between the
# markers) goes to cffi, and each header's source file into one unit: the
# split engine, the packed rings its primitives switch to, the net job
PARTS = ("_ring", "_ring_packed", "_ring_net", "_ring_pingpong")
for part in PARTS:
    with open(os.path.join(HERE, part + ".h")) as f:
        text = f.read()
        ffibuilder.cdef(text.split("/* CDEF-BEGIN */")[1].split("/* CDEF-END */")[0])

_extra = os.environ.get("EMU_RING_CFLAGS", "").split()
ffibuilder.set_source(
    "emu._ring",
    "".join(f'#include "{part}.c"\n' for part in PARTS),
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=gnu11", "-fno-strict-aliasing"] + _extra,
    extra_link_args=[a for a in _extra if a.startswith("-fsanitize")],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
