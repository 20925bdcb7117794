"""vhost-pci-net's register-level contract, ``docs/vhost-pci-device.md``,
defined once: the device model (``emu.virtio.vhost_pci_net``) and VM2's
driver (``emu.guest.vhost_pci_net``) both take their layout from here, and
``tests/virtio/test_vhost_pci_layout.py`` parses the document's tables and
fails where they and this module disagree.

Structures are :class:`Record`\\ s whose fields carry the document's names
and offsets; padding between fields is implied by the offsets.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from emu.spec import virtio as V, virtio_net as N

# -- §1 identity ------------------------------------------------------------------------------------
VIRTIO_ID_VHOST_PCI_NET = 21                       # the original design's VIRTIO_ID_VHOST_PCI_NET
PCI_DEVICE_ID = 0x1040 + VIRTIO_ID_VHOST_PCI_NET   # modern virtio-pci id: 0x1055
PCI_CLASS = 0x020000                               # Ethernet controller

# -- §2 BARs ----------------------------------------------------------------------------------------
WINDOW_BAR = 2              # 64-bit prefetchable, RAM-backed: the peer's memory
METADATA_BAR = 4            # 32-bit, RAM-backed, read-only for the driver
METADATA_SIZE = 0x2000
DEFAULT_WINDOW_SIZE = 4 << 30
NOTIFY_LENGTH = 0x800       # BAR0 notify structure of the device's own queues
DOORBELL_OFFSET = 0x3800    # BAR0: right after it, one 4-byte doorbell per peer vring (§6)
DOORBELL_STRIDE = 4

# -- §3 features offered to the driver ----------------------------------------------------------------
# device-specific (bits 50-127 are the device type's, §6): the driver serves
# peer vrings in the packed format too -- the peer is offered RING_PACKED
F_PEER_RING_PACKED = 1 << 50
FEATURES = V.F_VERSION_1 | N.F_MRG_RXBUF | V.F_INDIRECT_DESC | V.F_EVENT_IDX | F_PEER_RING_PACKED
# with the device property packed=on also V.F_RING_PACKED, for its own queues


@dataclass(frozen=True)
class Field:
    name: str          # as the document names it
    offset: int
    code: str          # struct code, little endian: B H I Q 6s

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.code)


class Record:
    """A little-endian structure: named fields at fixed offsets."""

    def __init__(self, *fields: tuple[str, int, str], size: int | None = None):
        self.fields = tuple(Field(*f) for f in fields)
        fmt, end = "<", 0
        for f in self.fields:
            if f.offset < end:
                raise ValueError(f"field {f.name} at 0x{f.offset:x} overlaps the one before")
            fmt += "x" * (f.offset - end) + f.code
            end = f.offset + f.size
        if size is not None:
            fmt += "x" * (size - end)
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.offset = {f.name: f.offset for f in self.fields}
        self._field = {f.name: f for f in self.fields}

    def pack_into(self, buf, offset: int, *values) -> None:
        self.struct.pack_into(buf, offset, *values)

    def unpack_from(self, buf, offset: int = 0) -> tuple:
        return self.struct.unpack_from(buf, offset)

    def pack_field(self, buf, offset: int, name: str, value) -> None:
        """Write one field of the record that starts at ``offset``."""
        f = self._field[name]
        struct.pack_into("<" + f.code, buf, offset + f.offset, value)

    def unpack_field(self, buf, offset: int, name: str):
        f = self._field[name]
        return struct.unpack_from("<" + f.code, buf, offset + f.offset)[0]


# -- §4 device configuration (BAR0 + 0x2000) ------------------------------------------------------------
CONFIG = Record(("mac", 0x00, "6s"), ("status", 0x06, "H"), ("max_virtqueue_pairs", 0x08, "H"),
                ("peer_vq_max", 0x0A, "H"), ("metadata_generation", 0x0C, "I"),
                ("driver_ack", 0x10, "I"), ("peer_vq_select", 0x14, "H"),
                ("peer_vq_msix_vector", 0x16, "H"), ("peer_vq_kick_count", 0x18, "I"),
                ("peer_vq_base", 0x1C, "I"))
CFG_MAC = CONFIG.offset["mac"]
CFG_STATUS = CONFIG.offset["status"]
CFG_MAX_PAIRS = CONFIG.offset["max_virtqueue_pairs"]
CFG_PEER_VQ_MAX = CONFIG.offset["peer_vq_max"]
CFG_GENERATION = CONFIG.offset["metadata_generation"]
CFG_DRIVER_ACK = CONFIG.offset["driver_ack"]
CFG_VQ_SELECT = CONFIG.offset["peer_vq_select"]
CFG_VQ_VECTOR = CONFIG.offset["peer_vq_msix_vector"]
CFG_VQ_KICKS = CONFIG.offset["peer_vq_kick_count"]
CFG_VQ_BASE = CONFIG.offset["peer_vq_base"]
CONFIG_WRITABLE = ("driver_ack", "peer_vq_select", "peer_vq_msix_vector",
                   "peer_vq_base")                                           # the rest is R
S_LINK_UP = 1 << 0                              # status: peer connected and its memory mapped

# -- §5 metadata (BAR4) -------------------------------------------------------------------------------
MAGIC = 0x49435056          # "VPCI"
VERSION = 1
HEADER = Record(("magic", 0x000, "I"), ("version", 0x004, "I"), ("generation", 0x008, "I"),
                ("peer_state", 0x00C, "I"), ("peer_features", 0x010, "Q"),
                ("peer_protocol_features", 0x018, "Q"), ("peer_mac", 0x020, "6s"),
                ("peer_mtu", 0x026, "H"), ("nregions", 0x028, "I"), ("nvrings", 0x02C, "I"),
                ("window_size", 0x030, "Q"))
M_MAGIC = HEADER.offset["magic"]
M_GENERATION = HEADER.offset["generation"]
M_PEER_STATE = HEADER.offset["peer_state"]
M_FEATURES = HEADER.offset["peer_features"]
M_MAC = HEADER.offset["peer_mac"]
M_MTU = HEADER.offset["peer_mtu"]
M_NREGIONS = HEADER.offset["nregions"]
M_NVRINGS = HEADER.offset["nvrings"]
M_WINDOW_SIZE = HEADER.offset["window_size"]
# peer_state bits
PS_CONNECTED, PS_MEM_READY, PS_FEATURES_SET, PS_VHOST_PCI = 1 << 0, 1 << 1, 1 << 2, 1 << 3

M_REGIONS, MAX_REGIONS = 0x040, 32
REGION = Record(("gpa", 0, "Q"), ("size", 8, "Q"), ("window_offset", 16, "Q"),
                ("reserved", 24, "Q"))
M_VRINGS = M_REGIONS + MAX_REGIONS * REGION.size      # 0x440
VRING = Record(("num", 0, "H"), ("base", 2, "H"), ("enabled", 4, "B"), ("ready", 5, "B"),
               ("epoch", 6, "H"), ("desc", 8, "Q"), ("avail", 16, "Q"), ("used", 24, "Q"),
               ("format", 32, "B"), ("reserved", 33, "B"), ("reserved", 34, "H"),
               ("reserved", 36, "I"))
FORMAT_SPLIT, FORMAT_PACKED = 0, 1      # vring[i].format
MAX_PEER_VQS = (METADATA_SIZE - M_VRINGS) // VRING.size   # what the metadata page holds


def region_at(i: int) -> int:
    """Metadata offset of ``region[i]``."""
    return M_REGIONS + REGION.size * i


def vring_at(i: int) -> int:
    """Metadata offset of ``vring[i]``."""
    return M_VRINGS + VRING.size * i


def doorbell(i: int) -> int:
    """BAR0 offset of peer vring ``i``'s doorbell."""
    return DOORBELL_OFFSET + DOORBELL_STRIDE * i
