"""vhost-user's vocabulary: request ids, header flags, feature bits, wire limits.

Names follow today's spec (QEMU docs/interop/vhost-user.rst): *front-end*
and *back-end*, ``SET_BACKEND_REQ_FD`` rather than ``SET_SLAVE_REQ_FD``.
"""
from __future__ import annotations

import enum

from emu.spec import vhost, virtio, virtio_net

U64_MAX = (1 << 64) - 1
MAX_CONFIG_SIZE = 256          # VHOST_USER_MAX_CONFIG_SIZE
MAX_MEM_TABLE_REGIONS = 8      # VHOST_MEMORY_BASELINE_NREGIONS: SET_MEM_TABLE's wire limit
MAX_FDS = 8                    # fds per message, as QEMU and libvhost-user
VRING_INDEX_MASK = 0xFF        # ring index bits of the fd word
VRING_NOFD_MASK = 0x100        # "no fd: poll" bit of the fd word


# -- request ids ----------------------------------------------------------------
class FrontendRequest(enum.IntEnum):
    """Requests the front-end sends to the back-end on the main socket."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40
    GET_SHARED_OBJECT = 41
    SET_DEVICE_STATE_FD = 42
    CHECK_DEVICE_STATE = 43


class BackendRequest(enum.IntEnum):
    """Requests the back-end sends on the SET_BACKEND_REQ_FD channel."""

    IOTLB_MSG = 1
    CONFIG_CHANGE_MSG = 2
    VRING_HOST_NOTIFIER_MSG = 3
    VRING_CALL = 4
    VRING_ERR = 5
    SHARED_OBJECT_ADD = 6
    SHARED_OBJECT_REMOVE = 7
    SHARED_OBJECT_LOOKUP = 8


class SeedRequest(enum.IntEnum):
    """The seed's (Wei Wang's vhost-pci v1) requests, on ids today's spec
    gives to NET_SET_MTU and SET_BACKEND_REQ_FD.  Decoded as such only on a
    connection where ``vhost_pci="seed"`` and the extension is active."""

    SET_DEVICE_ID = 20      # u64: virtio device id of the front-end's device
    SET_VHOST_PCI = 21      # u64: 0 = start (the vhost-pci device appears), 1 = stop


VHOST_PCI_START, VHOST_PCI_STOP = 0, 1


# -- header flags -----------------------------------------------------------------
class Flags(enum.IntFlag):
    VERSION = 0x1          # bits 0-1: protocol version, always 1
    REPLY = 0x4
    NEED_REPLY = 0x8


VERSION_MASK = 0x3
KNOWN_FLAGS = int(VERSION_MASK | Flags.REPLY | Flags.NEED_REPLY)   # plain int: ~ must see all 32 bits


# -- feature bits -------------------------------------------------------------------
class ProtocolFeature(enum.IntFlag):
    """GET/SET_PROTOCOL_FEATURES bits.

    Bit 4 is ``NET_MTU`` in today's spec and ``VHOST_PCI`` in the seed
    (Wei Wang's 2016 patch); which one it means on a connection is decided
    by :mod:`emu.vhost_user.extension`.  ``EMU_VHOST_PCI`` (bit 63) is emu's
    private marker: stock QEMU and DPDK mask it away, so they never turn the
    extension on by accident.
    """

    MQ = 1 << 0
    LOG_SHMFD = 1 << 1
    RARP = 1 << 2
    REPLY_ACK = 1 << 3
    NET_MTU = 1 << 4
    VHOST_PCI = 1 << 4          # alias: the seed's meaning of bit 4
    BACKEND_REQ = 1 << 5
    CROSS_ENDIAN = 1 << 6
    CRYPTO_SESSION = 1 << 7
    PAGEFAULT = 1 << 8
    CONFIG = 1 << 9
    BACKEND_SEND_FD = 1 << 10
    HOST_NOTIFIER = 1 << 11
    INFLIGHT_SHMFD = 1 << 12
    RESET_DEVICE = 1 << 13
    INBAND_NOTIFICATIONS = 1 << 14
    CONFIGURE_MEM_SLOTS = 1 << 15
    STATUS = 1 << 16
    XEN_MMAP = 1 << 17
    SHARED_OBJECT = 1 << 18
    DEVICE_STATE = 1 << 19
    EMU_VHOST_PCI = 1 << 63


class VirtioFeature(enum.IntFlag):
    """Virtio device-feature bits that vhost-user itself cares about (the
    spec's bits, :mod:`emu.spec`, named for logs and for the wire)."""

    NET_CSUM = virtio_net.F_CSUM
    NET_GUEST_CSUM = virtio_net.F_GUEST_CSUM
    NET_MTU = virtio_net.F_MTU
    NET_MAC = virtio_net.F_MAC
    NET_MRG_RXBUF = virtio_net.F_MRG_RXBUF
    NET_STATUS = virtio_net.F_STATUS
    NET_CTRL_VQ = virtio_net.F_CTRL_VQ
    NET_GUEST_ANNOUNCE = virtio_net.F_GUEST_ANNOUNCE
    NET_MQ = virtio_net.F_MQ
    NOTIFY_ON_EMPTY = virtio.F_NOTIFY_ON_EMPTY
    LOG_ALL = vhost.F_LOG_ALL
    ANY_LAYOUT = virtio.F_ANY_LAYOUT
    INDIRECT_DESC = virtio.F_INDIRECT_DESC
    EVENT_IDX = virtio.F_EVENT_IDX
    PROTOCOL_FEATURES = vhost.F_PROTOCOL_FEATURES    # never offered to a guest
    VERSION_1 = virtio.F_VERSION_1
    ACCESS_PLATFORM = virtio.F_ACCESS_PLATFORM
    RING_PACKED = virtio.F_RING_PACKED
    IN_ORDER = virtio.F_IN_ORDER


def flag_names(value: int, flags: type[enum.IntFlag]) -> str:
    """``"MQ|REPLY_ACK|bit40"``: readable feature sets for logs and errors."""
    names = []
    for bit in range(64):
        if value >> bit & 1:
            names.append(flags(1 << bit).name or f"bit{bit}")
    return "|".join(names) or "0"
