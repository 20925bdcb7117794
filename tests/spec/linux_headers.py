"""Linux's UAPI headers (linux-libc-dev) as a peer's definition of the
virtio and PCI specs: values compiled and printed by gcc, so macros that
reference other macros, casts and struct layouts all come out exactly as
a C peer (QEMU, DPDK, the Linux drivers) sees them."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

HEADERS = ("linux/virtio_config.h", "linux/virtio_ids.h", "linux/virtio_ring.h",
           "linux/virtio_pci.h", "linux/virtio_net.h", "linux/vhost_types.h",
           "linux/pci_regs.h")
INCLUDES = "#include <stddef.h>\n#include <stdio.h>\n" + "".join(
    f"#include <{h}>\n" for h in HEADERS)


def _gcc() -> str:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed (it builds emu's C engine too)"
    for h in HEADERS:
        assert os.path.exists(os.path.join("/usr/include", h)), \
            f"{h} missing: apt install linux-libc-dev"
    return gcc


def macros() -> set[str]:
    """Names of the object-like macros the headers define."""
    out = subprocess.run([_gcc(), "-dM", "-E", "-x", "c", "-"], input=INCLUDES, text=True,
                         capture_output=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] == "#define" and "(" not in parts[1]:
            names.add(parts[1])
    return names


def evaluate(exprs: dict[str, str], prelude: str = "") -> dict[str, int]:
    """Each C expression's value (as unsigned 64-bit), compiled against the
    headers.  A name the headers do not define fails the compile."""
    keys = list(exprs)
    body = "".join(f'    printf("%llu\\n", (unsigned long long)({exprs[k]}));\n' for k in keys)
    src = INCLUDES + prelude + "\nint main(void)\n{\n" + body + "    return 0;\n}\n"
    with tempfile.TemporaryDirectory() as d:
        c, exe = os.path.join(d, "peer.c"), os.path.join(d, "peer")
        with open(c, "w") as f:
            f.write(src)
        build = subprocess.run([_gcc(), "-std=gnu11", "-Wall", "-o", exe, c],
                               capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
        out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == len(keys)
    return {k: int(v) for k, v in zip(keys, out)}
