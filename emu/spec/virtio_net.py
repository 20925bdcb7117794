"""virtio-net as the virtio 1.x specification defines it (§5.1): feature
bits, configuration layout, control-queue commands, the packet header.
Shared by the device models and the guest drivers, which otherwise know
nothing of each other.  The transport's bits (VERSION_1, EVENT_IDX...)
are :mod:`emu.spec.virtio`'s."""
from __future__ import annotations

import struct

from emu.spec import vhost
from emu.spec.virtio import (F_ANY_LAYOUT, F_EVENT_IDX, F_INDIRECT_DESC, F_NOTIFY_ON_EMPTY,
                             F_RING_PACKED, F_VERSION_1)

VIRTIO_ID_NET = 1               # device id (§5)

# device feature bits (§5.1.3)
F_CSUM = 1 << 0
F_GUEST_CSUM = 1 << 1
F_CTRL_GUEST_OFFLOADS = 1 << 2
F_MTU = 1 << 3
F_MAC = 1 << 5
F_GSO = 1 << 6                  # legacy only (§5.1.3.2)
F_MRG_RXBUF = 1 << 15
F_STATUS = 1 << 16
F_CTRL_VQ = 1 << 17
F_CTRL_RX = 1 << 18
F_CTRL_VLAN = 1 << 19
F_CTRL_RX_EXTRA = 1 << 20
F_GUEST_ANNOUNCE = 1 << 21
F_MQ = 1 << 22
F_CTRL_MAC_ADDR = 1 << 23

# Bits a vhost-user back-end implements (the rings' format); the rest of a
# virtio-net device's bits (MAC, STATUS, CTRL_*) are the device model's own.
# Same idea as QEMU's user_feature_bits in hw/net/vhost_net.c.
VHOST_NET_BITS = (F_MRG_RXBUF | F_MTU | F_MQ | F_GUEST_ANNOUNCE | F_NOTIFY_ON_EMPTY
                  | F_ANY_LAYOUT | F_INDIRECT_DESC | F_EVENT_IDX | F_VERSION_1 | F_RING_PACKED
                  | vhost.F_LOG_ALL)
DEVICE_MODEL_BITS = F_MAC | F_STATUS | F_CTRL_VQ | F_CTRL_RX

# configuration layout (§5.1.4)
CONFIG = struct.Struct("<6sHHH")        # mac, status, max_virtqueue_pairs, mtu
CFG_MAC, CFG_STATUS, CFG_MAX_PAIRS, CFG_MTU = 0, 6, 8, 10


def config_size(features: int) -> int:
    """Bytes of struct virtio_net_config a device offering ``features``
    has: each field exists "only if" its feature is offered (§5.1.4); the
    mac is always there (QEMU's virtio_net_set_config_size does the same)."""
    end = CFG_MAC + 6
    for bit, field_end in ((F_STATUS, CFG_STATUS + 2), (F_MQ, CFG_MAX_PAIRS + 2),
                           (F_MTU, CFG_MTU + 2)):
        if features & bit:
            end = max(end, field_end)
    return end
S_LINK_UP = 1
S_ANNOUNCE = 2

# control queue (§5.1.6.5)
CTRL_HDR = struct.Struct("<BB")         # class, command
CTRL_OK, CTRL_ERR = 0, 1                # VIRTIO_NET_OK, VIRTIO_NET_ERR
CTRL_RX = 0                             # promisc/allmulti...: accepted, no filtering here
CTRL_MAC = 1
CTRL_VLAN = 2
CTRL_ANNOUNCE = 3
CTRL_ANNOUNCE_ACK = 0
CTRL_MQ = 4
CTRL_MQ_VQ_PAIRS_SET = 0
CTRL_MQ_VQ_PAIRS_MIN, CTRL_MQ_VQ_PAIRS_MAX = 1, 0x8000
CTRL_GUEST_OFFLOADS = 5
CTRL_GUEST_OFFLOADS_SET = 0

# header (§5.1.6): struct virtio_net_hdr, and with num_buffers (MRG_RXBUF, or
# always in virtio 1.x) struct virtio_net_hdr_mrg_rxbuf
HDR_LEN_LEGACY = 10
HDR_LEN_MRG = 12


def hdr_len(features: int) -> int:
    return HDR_LEN_MRG if features & (F_MRG_RXBUF | F_VERSION_1) else HDR_LEN_LEGACY


def rx_queue(pair: int) -> int:
    return 2 * pair


def tx_queue(pair: int) -> int:
    return 2 * pair + 1
