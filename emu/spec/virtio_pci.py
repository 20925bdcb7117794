"""The virtio-pci modern transport (VIRTIO 1.2 §4.1): how a virtio device
shows itself on PCI, and the layout of the structures a driver finds
through its vendor capabilities.  Offsets are in bytes."""
from __future__ import annotations

# ids (§4.1.2): "Any PCI device with PCI Vendor ID 0x1AF4, and PCI Device ID
# 0x1000 through 0x107F inclusive is a virtio device"; a modern-only device
# has id 0x1040 + its virtio device id and a subsystem id of 0x40 or higher
PCI_VENDOR_ID = 0x1AF4
PCI_DEVICE_ID_MODERN_BASE = 0x1040
PCI_DEVICE_ID_LAST = 0x107F
PCI_SUBSYSTEM_ID_MIN = 0x40
# (§4.1.2.1: "Transitional devices MUST have a PCI Revision ID of 0 ... MUST
# have the PCI Subsystem Device ID matching the Virtio Device ID"; their PCI
# Device ID is the one the table of §4.1.2.1 gives: 0x1000 + device id - 1)
PCI_DEVICE_ID_TRANSITIONAL_BASE = 0x1000 - 1
PCI_DEVICE_ID_TRANSITIONAL_LAST = 0x103F
QEMU_SUBSYSTEM_ID = 0x1100     # QEMU's PCI_SUBDEVICE_ID_QEMU: a modern-only device's subsystem id
ABI_VERSION = 0                 # the transitional device's revision (VIRTIO_PCI_ABI_VERSION)
MODERN_REVISION = 1             # (§4.1.2.1: "Non-transitional devices SHOULD have ... 1 or higher")


def pci_device_id(virtio_device_id: int) -> int:
    """The PCI device id of a modern device of this virtio type (§4.1.2.1)."""
    return PCI_DEVICE_ID_MODERN_BASE + virtio_device_id


def transitional_device_id(virtio_device_id: int) -> int:
    """The PCI device id of a transitional device of this type (§4.1.2.1's
    table: network card 0x1000, block device 0x1001, ...)."""
    return PCI_DEVICE_ID_TRANSITIONAL_BASE + virtio_device_id


# vendor capability cfg_type (§4.1.4)
CAP_COMMON_CFG = 1
CAP_NOTIFY_CFG = 2
CAP_ISR_CFG = 3
CAP_DEVICE_CFG = 4
CAP_PCI_CFG = 5

# struct virtio_pci_cap: field offsets from the capability start, and sizes
CAP_VNDR = 0
CAP_NEXT = 1
CAP_LEN = 2
CAP_CFG_TYPE = 3
CAP_BAR = 4
CAP_ID = 5
CAP_OFFSET = 8
CAP_LENGTH = 12
CAP_SIZE = 16                   # sizeof(struct virtio_pci_cap)
NOTIFY_CAP_MULT = 16            # struct virtio_pci_notify_cap: notify_off_multiplier
NOTIFY_CAP_SIZE = 20
PCI_CFG_DATA = 16               # struct virtio_pci_cfg_cap: pci_cfg_data[4]
PCI_CFG_CAP_SIZE = 20

# struct virtio_pci_common_cfg (§4.1.4.3); the 64-bit queue addresses are
# also accessed as two 32-bit halves
COMMON_DFSELECT = 0x00          # device_feature_select
COMMON_DF = 0x04                # device_feature
COMMON_GFSELECT = 0x08          # driver_feature_select
COMMON_GF = 0x0C                # driver_feature
COMMON_MSIX = 0x10              # config_msix_vector
COMMON_NUMQ = 0x12              # num_queues
COMMON_STATUS = 0x14            # device_status
COMMON_CFGGENERATION = 0x15     # config_generation
COMMON_Q_SELECT = 0x16
COMMON_Q_SIZE = 0x18
COMMON_Q_MSIX = 0x1A
COMMON_Q_ENABLE = 0x1C
COMMON_Q_NOFF = 0x1E            # queue_notify_off
COMMON_Q_DESC = 0x20            # queue_desc
COMMON_Q_AVAIL = 0x28           # queue_driver
COMMON_Q_USED = 0x30            # queue_device
COMMON_Q_NDATA = 0x38           # queue_notify_data (VIRTIO_F_NOTIFICATION_DATA)
COMMON_Q_RESET = 0x3A           # queue_reset (VIRTIO_F_RING_RESET)
COMMON_CFG_SIZE_1_0 = 0x38      # the structure as virtio 1.0 defines it (to queue_device)
COMMON_CFG_SIZE = 0x3C          # with the 1.2 fields
COMMON_FIELD_SIZES = {
    COMMON_DFSELECT: 4, COMMON_DF: 4, COMMON_GFSELECT: 4, COMMON_GF: 4, COMMON_MSIX: 2,
    COMMON_NUMQ: 2, COMMON_STATUS: 1, COMMON_CFGGENERATION: 1, COMMON_Q_SELECT: 2,
    COMMON_Q_SIZE: 2, COMMON_Q_MSIX: 2, COMMON_Q_ENABLE: 2, COMMON_Q_NOFF: 2, COMMON_Q_DESC: 8,
    COMMON_Q_AVAIL: 8, COMMON_Q_USED: 8, COMMON_Q_NDATA: 2, COMMON_Q_RESET: 2,
}


# -- the legacy interface (§4.1.4.8, "Legacy Interfaces: A Note on PCI Device
# Layout"): BAR0 is an I/O region of little-endian registers, then the
# device-specific configuration ------------------------------------------------------
HOST_FEATURES = 0x00            # le32 ro: device features, bits 0..31
GUEST_FEATURES = 0x04           # le32 rw: driver features, bits 0..31
QUEUE_PFN = 0x08                # le32 rw: queue address >> QUEUE_ADDR_SHIFT
QUEUE_NUM = 0x0C                # le16 ro: queue size
QUEUE_SEL = 0x0E                # le16 rw
QUEUE_NOTIFY = 0x10             # le16 rw: a write of the queue index kicks it
STATUS = 0x12                   # u8 rw: device status
ISR = 0x13                      # u8 ro: reading clears it
MSI_CONFIG_VECTOR = 0x14        # le16 rw, present while MSI-X is enabled
MSI_QUEUE_VECTOR = 0x16         # le16 rw, present while MSI-X is enabled
CONFIG_OFF = 0x14               # device configuration without MSI-X enabled ...
CONFIG_OFF_MSIX = 0x18          # ... and with it
QUEUE_ADDR_SHIFT = 12           # (§4.1.5.1.3.1: "the driver ... writes the physical address, divided by 4096")
