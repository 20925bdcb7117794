"""A real Linux guest for end-to-end tests: Debian's kernel + a busybox
initramfs (tests/peers/build_initramfs.sh) under QEMU 7.2 with TCG, its
virtio-net-pci device backed by a vhost-user socket.

QEMU 7.2 + TCG + MSI-X segfaults in vhost_net_start, so the NIC always gets
``vectors=0`` (INTx).  A boot costs ~10 s: build the initramfs once per
session (cached by kernel version) and keep guests few.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from emu.testing import orphans

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "build_initramfs.sh")


def kernel_version() -> str:
    mods = sorted(os.listdir("/lib/modules"), key=lambda v: [int(x) if x.isdigit() else x
                                                             for x in re.split(r"[.-]", v)])
    return mods[-1]


def kernel_image(kver: str | None = None) -> str:
    kver = kver or kernel_version()
    path = f"/boot/vmlinuz-{kver}"
    if not os.path.exists(path):
        cands = sorted(glob.glob("/boot/vmlinuz-*"))
        if not cands:
            raise FileNotFoundError("no kernel in /boot: apt-get install linux-image-amd64")
        path = cands[-1]
    return path


def initramfs(cache_dir: str | None = None) -> str:
    """Path of a cached initramfs for the newest installed kernel and this
    build script.  The cache is keyed by the script's content, not its
    mtime: the directory is shared by every checkout on the machine, and
    one with an older script must not hand its image to another."""
    kver = kernel_version()
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "emu-test-guest")
    os.makedirs(cache_dir, exist_ok=True)
    with open(BUILD, "rb") as f:
        script = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(cache_dir, f"initrd-{kver}-{script}.cpio.gz")
    if not os.path.exists(out):
        tmp = out + f".{os.getpid()}"
        subprocess.run([BUILD, tmp, kver], check=True, capture_output=True)
        os.replace(tmp, out)
    return out


@dataclass
class GuestResult:
    returncode: int
    console: str

    def ping_replies(self, nic: int = 0) -> tuple[int, int]:
        """(transmitted, received) from busybox ping's summary line for
        ``ethN`` (the guest pings through each NIC in turn)."""
        part = re.split(rf"VT: ping eth{nic}\r?\n", self.console, maxsplit=1)
        if len(part) < 2:
            return (0, 0)
        text = part[1].split("VT: ping eth", 1)[0]
        m = re.search(r"(\d+) packets transmitted, (\d+) packets received", text)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def qemu_cmd(sock: str, mode: str = "ping", count: int = 3, mem: str = "256M",
             mac: str = "52:54:00:12:34:56", extra_append: str = "",
             initrd: str | None = None, queues: int = 1, packed: bool = False,
             more_nics: tuple = ()) -> list[str]:
    """QEMU 7.2 as a vhost-user front-end (socket client) booting Linux.
    ``packed``: eth0's virtio-net-pci with packed=on; ``more_nics``:
    ``(sock, packed)`` of eth1, eth2... (one boot pings through each)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise FileNotFoundError("qemu-system-x86_64 not installed (scripts/install-peers.sh)")
    append = (f"console=ttyS0 panic=-1 loglevel=4 vt.mode={mode} vt.count={count} "
              f"vt.nics={1 + len(more_nics)} {extra_append}").strip()
    nics = []
    for i, (path, pk) in enumerate(((sock, packed), *more_nics)):
        m = mac if i == 0 else f"52:54:00:12:35:{i:02x}"
        nics += ["-chardev", f"socket,id=c{i},path={path}",
                 "-netdev", f"vhost-user,id=n{i},chardev=c{i},queues={queues}",
                 "-device", f"virtio-net-pci,netdev=n{i},mac={m},romfile=,vectors=0,"
                            f"packed={'on' if pk else 'off'}"]
    return [
        qemu, "-machine", "q35,memory-backend=mem", "-accel", "tcg", "-cpu", "max",
        "-smp", "1", "-m", mem,
        "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
        *nics,
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-no-reboot",
        "-kernel", kernel_image(), "-initrd", initrd or initramfs(), "-append", append,
    ]


def run_guest(sock: str, timeout: float = 120, **kw) -> GuestResult:
    """Boot the guest to completion (it powers off by itself)."""
    cmd = qemu_cmd(sock, **kw)
    try:
        p = orphans.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        return GuestResult(p.returncode, p.stdout.decode(errors="replace"))
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        return GuestResult(-9, out)
