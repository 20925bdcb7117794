"""Frame capture to pcap files (``-object filter-dump,id=,netdev=,file=[,maxlen=]``).

The file is a classic libpcap file (Ethernet link type, microsecond
timestamps) that tshark, tcpdump and scapy read.  Frames are written by
the C data path itself, one ``writev`` per frame on an ``O_APPEND`` fd
(:class:`emu.ring.Capture`): nothing is lost and two data-path threads
never interleave records.  Which frames: every frame a tapped queue moves,
without the virtio-net header.
"""
from __future__ import annotations

import os
import struct

from emu.ring import Capture

PCAP_MAGIC = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
DIRECTIONS = ("all", "rx", "tx")


class PcapCapture(Capture):
    """An open capture file; attach it to queues (``set_capture``)."""

    def __init__(self, path: str, snaplen: int = 65536, queue: str = "all", name: str = "",
                 fd: int | None = None):
        """*fd*: the file already open for writing (``O_APPEND``), owned from
        here on; else *path* is created (truncated)."""
        if queue not in DIRECTIONS or not 1 <= snaplen <= 0x7FFFFFFF:
            if fd is not None:
                os.close(fd)
            raise ValueError(f"queue={queue}: expected all, rx or tx" if queue not in DIRECTIONS
                             else f"maxlen {snaplen} out of range")
        self.path = path
        self.queue = queue
        self.name = name
        self.fd = fd if fd is not None else os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(self.fd, struct.pack("<IHHiIII", PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen,
                                          LINKTYPE_ETHERNET))
        except BaseException:
            os.close(self.fd)
            raise
        super().__init__(self.fd, snaplen)

    def wants(self, direction: str) -> bool:
        """Whether frames going ``direction`` (rx: into this VM, tx: out) are captured."""
        return self.queue in ("all", direction)

    def stats(self) -> dict:
        return {"file": self.path, "frames": self.frames, "bytes": self.bytes,
                "errors": self.errors}

    def close(self) -> None:
        """Call only once no data path uses the capture."""
        if self.fd >= 0:
            self.detach()
            os.close(self.fd)
            self.fd = -1
