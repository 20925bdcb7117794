"""virtio core (VIRTIO 1.2 §2, §6): what every device and driver share,
whatever the device type and transport.

Feature bits are masks (``1 << bit``), as features are handled as one
64-bit value everywhere in emu.  The ISR bits and NO_VECTOR are defined
by the transport chapter (§4.1) but every device model raises interrupts
with them, so they live here with the rest of the core.
"""
from __future__ import annotations

# device status field (§2.1)
STATUS_ACKNOWLEDGE = 0x01
STATUS_DRIVER = 0x02
STATUS_DRIVER_OK = 0x04
STATUS_FEATURES_OK = 0x08
STATUS_NEEDS_RESET = 0x40       # DEVICE_NEEDS_RESET: set by the device only
STATUS_FAILED = 0x80

# reserved feature bits (§6; bits 24 and 27 are legacy, §6.3)
F_NOTIFY_ON_EMPTY = 1 << 24
F_ANY_LAYOUT = 1 << 27
F_BAD_FEATURE = 1 << 30        # legacy: a driver acking it does not negotiate (QEMU's)
F_INDIRECT_DESC = 1 << 28
F_EVENT_IDX = 1 << 29
F_VERSION_1 = 1 << 32
F_ACCESS_PLATFORM = 1 << 33
F_RING_PACKED = 1 << 34
F_IN_ORDER = 1 << 35
F_ORDER_PLATFORM = 1 << 36
F_SR_IOV = 1 << 37
F_NOTIFICATION_DATA = 1 << 38
F_NOTIF_CONFIG_DATA = 1 << 39
F_RING_RESET = 1 << 40

# bits only the legacy interface shows (§6.3 "Legacy Interface: Reserved
# Feature Bits"; BAD_FEATURE is QEMU's legacy probe of a broken driver)
LEGACY_ONLY_FEATURES = F_NOTIFY_ON_EMPTY | F_ANY_LAYOUT | F_BAD_FEATURE

# ISR status (§4.1.4.5; MMIO's InterruptStatus has the same two bits, §4.2.2)
ISR_QUEUE = 0x1                 # used buffer notification
ISR_CONFIG = 0x2                # configuration change notification

NO_VECTOR = 0xFFFF              # VIRTIO_MSI_NO_VECTOR (§4.1.5.1.2): no MSI-X vector

# (§2.7: "Queue Size value is always a power of 2.  The maximum Queue Size
# value is 32768"; the packed ring's limit is the same, §2.8)
QUEUE_MAX_SIZE = 32768
