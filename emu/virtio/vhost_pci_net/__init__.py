"""vhost-pci-net: a vhost-user back-end presented to VM2 as a PCI device
whose BAR2 *is* the peer's (VM1's) memory.  Register contract:
``docs/vhost-pci-device.md``, its constants ``emu.spec.vhost_pci_net``.

What the device does, and what it leaves to VM2's driver:

* vhost-user (back-end side, :class:`emu.vhost_user.backend.Backend`): the
  peer's memory table is mapped into the fixed peer-memory window (BAR2,
  regions 2 MiB-aligned in gpa order), its vrings are described in the
  metadata BAR (BAR4, guest-physical addresses of the peer), kicks become
  MSI-X vectors the driver chose, doorbells (BAR0 + 0x3800 + 4i) signal the
  peer's call eventfd of vring *i* (an ioeventfd: the driver's C loop writes
  the eventfd directly, as a doorbell write would without a VM exit);
* the driver moves packets itself, between the peer's rings and its own.

One job per module:

==============  ===================================================================
``device``      the virtio face: own queues, features, device configuration
``peer``        the vhost-user face: what the peer does, published to the driver
``metadata``    the metadata page (BAR4) and its sequence lock
``handshake``   window safety: generation, ``driver_ack``, unmap or revoke
``mapper``      the peer's memory table into the window; a refused one changes nothing
``kicks``       the peer's kicks -> the driver's MSI-X vectors
``doorbells``   the driver's doorbells -> the peer's call eventfds (stable fds)
``function``    the PCI function: BAR0 doorbells, BAR2 window, BAR4 metadata
``limits``      what one peer may cost the device
==============  ===================================================================

The device's vhost-user socket is not here: ``emu.netdev`` owns every
vhost-user socket of a machine (``VhostUserBackendSocket`` for this one).
"""
from __future__ import annotations

from .device import VhostPciNetDevice
from .function import VhostPciNetFunction
from .limits import PeerLimits

__all__ = ["PeerLimits", "VhostPciNetDevice", "VhostPciNetFunction"]
