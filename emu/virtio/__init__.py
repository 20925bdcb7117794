"""virtio: the transport-independent device base and the virtio-pci
transport (modern, legacy, transitional); device types live in their own
modules."""
from __future__ import annotations

from emu.virtio.device import QueueConfig, VirtioDevice, VirtioTransport
from emu.virtio.pci import VirtioPCIFunction
from emu.virtio.pci_layout import QEMU_LAYOUT, Interfaces, VirtioPCILayout

__all__ = ["Interfaces", "QEMU_LAYOUT", "QueueConfig", "VirtioDevice", "VirtioPCIFunction",
           "VirtioPCILayout", "VirtioTransport"]
