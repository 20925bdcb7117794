"""The PCI function of vhost-pci-net: the virtio-pci transport plus the
doorbells (BAR0), the peer-memory window (BAR2) and the metadata page
(BAR4), ``docs/vhost-pci-device.md`` §2."""
from __future__ import annotations

from emu.pci.bar import RamBacking
from emu.spec import vhost_pci_net as S
from emu.virtio.pci import VirtioPCIFunction
from emu.virtio.pci_layout import VirtioPCILayout

from .device import VhostPciNetDevice
from .doorbells import Doorbells


class VhostPciNetFunction(VirtioPCIFunction):
    def __init__(self, dev: VhostPciNetDevice, name: str = ""):
        # MSI-X: config + own queues + one per peer vring (kicks)
        vectors = 1 + dev.num_queues + dev.peer_vq_max
        super().__init__(dev, layout=VirtioPCILayout(notify_length=S.NOTIFY_LENGTH,
                                                     msix_vectors=vectors),
                         pci_device_id=S.PCI_DEVICE_ID, name=name or dev.name)
        n = dev.peer_vq_max
        self.doorbells = Doorbells(dev.calls, n)
        self.bar0.add(S.DOORBELL_OFFSET, S.DOORBELL_STRIDE * n, self.doorbells, "doorbells")
        for i in range(n):
            self.add_ioeventfd(0, S.doorbell(i), dev.calls.fds[i])
        w = dev.window
        self.add_bar(S.WINDOW_BAR, w.size, "mem64", True,
                     ram=RamBacking(w.base, w.size, keepalive=w, accessible=w.accessible))
        md = dev.metadata
        self.add_bar(S.METADATA_BAR, S.METADATA_SIZE, "mem32",
                     ram=RamBacking.from_buffer(md.mm, readonly=True))
