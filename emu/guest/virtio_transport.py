"""Which virtio-pci interface a guest driver uses for a function."""
from __future__ import annotations

from emu.guest.pci import PCIDevice
from emu.guest.virtio_pci import VirtioPCIDriver, find_virtio_caps
from emu.guest.virtio_pci_legacy import LegacyVirtioPCIDriver
from emu.spec.virtio_pci import CAP_COMMON_CFG, CAP_ISR_CFG, CAP_NOTIFY_CFG


def transport(dev: PCIDevice, legacy: bool = False) -> VirtioPCIDriver | LegacyVirtioPCIDriver:
    """The transport driver for ``dev``: the modern interface when it has
    one (Linux's order), the legacy one if asked for or if it is the only
    one (a legacy-only device, or a transitional one whose back-end lacks
    VERSION_1)."""
    if legacy:
        return LegacyVirtioPCIDriver(dev)
    if not dev.bars:
        dev.size_bars()
    caps = find_virtio_caps(dev)
    if all(c in caps for c in (CAP_COMMON_CFG, CAP_NOTIFY_CFG, CAP_ISR_CFG)):
        return VirtioPCIDriver(dev)
    return LegacyVirtioPCIDriver(dev)
