"""virtio: the transport-independent device base and the modern
virtio-pci transport; device types live in their own modules."""
from __future__ import annotations

from emu.virtio.device import QueueConfig, VirtioDevice, VirtioTransport
from emu.virtio.pci import VirtioPCIFunction, VirtioPCILayout

__all__ = ["QueueConfig", "VirtioDevice", "VirtioPCIFunction", "VirtioPCILayout",
           "VirtioTransport"]
