"""``-device virtio-net-pci``: the device model its netdev calls for and
the PCI function QEMU 7.2 builds for it.

* The model: a vhost-user netdev gets :class:`~emu.virtio.virtio_net.VirtioNetDevice`
  (the back-end moves the packets); a netdev whose data path is emu's own
  (``socket``, ``hubport``: :class:`emu.netdev_internal.InternalNetdev`)
  gets :class:`~emu.virtio.net_internal.InternalNetDevice`.
* The function: QEMU's layout (:data:`~emu.virtio.pci_layout.QEMU_LAYOUT`)
  and interfaces -- ``disable-legacy`` ``auto`` is off on a conventional
  PCI bus (emu's root buses), so the device is transitional (0x1af4:0x1000,
  subsystem 1); ``disable-legacy=on`` makes it modern-only (0x1041,
  subsystem 0x1100 as every QEMU PCI device); ``disable-modern=on``
  legacy-only.  MSI-X vectors default to QEMU's ``2 * queue pairs + 2``.
  A vhost-user back-end that has not connected yet leaves the function
  unrealized until the machine starts (its features decide whether the
  modern interface exists).
"""
from __future__ import annotations

from emu.spec import virtio_pci
from emu.virtio.pci import VirtioPCIFunction
from emu.virtio.pci_layout import QEMU_LAYOUT, Interfaces

DRIVER = "virtio-net-pci"


def interfaces(disable_legacy: str | bool = "auto", disable_modern: bool = False) -> Interfaces:
    """QEMU's ``disable-legacy`` (on/off/auto) and ``disable-modern``
    (on/off).  ``auto``: legacy on, as on any bus that is not a PCIe port."""
    legacy_off = disable_legacy is True or disable_legacy == "on"
    return Interfaces(legacy=not legacy_off, modern=not disable_modern)


def default_vectors(queue_pairs: int) -> int:
    """QEMU's virtio_net_pci_realize: one per queue of each pair, the
    control queue's and the configuration's."""
    return 2 * queue_pairs + 2


def make_model(netdev, ram, *, mac: bytes, name: str, events, mq: bool = False,
               mrg_rxbuf: bool = True, event_idx: bool = True, indirect_desc: bool = True,
               host_mtu: int = 0, queue_size: int = 256, packed: bool = False, loop=None):
    """The device model ``netdev`` needs (``packed``: VIRTIO_F_RING_PACKED
    offered, either way its rings' device side is the C engine's)."""
    if getattr(netdev, "internal", False):
        from emu.virtio.net_internal import InternalNetDevice
        return InternalNetDevice(netdev, ram, loop, mac=mac, mq=mq, mrg_rxbuf=mrg_rxbuf,
                                 event_idx=event_idx, indirect_desc=indirect_desc,
                                 host_mtu=host_mtu, queue_size=queue_size, packed=packed,
                                 name=name, events=events)
    from emu.virtio.virtio_net import VirtioNetDevice
    return VirtioNetDevice(netdev, ram, loop, mac=mac, queue_pairs=netdev.queues, mq=mq,
                           mrg_rxbuf=mrg_rxbuf, event_idx=event_idx,
                           indirect_desc=indirect_desc, host_mtu=host_mtu,
                           queue_size=queue_size, packed=packed, name=name, events=events)


def make_function(model, *, name: str, vectors: int | None = None,
                  disable_legacy: str | bool = "auto",
                  disable_modern: bool = False) -> VirtioPCIFunction:
    """The PCI function of ``model``, realized unless its features are not
    known yet (call ``realize()`` once they are)."""
    ifs = interfaces(disable_legacy, disable_modern)
    layout = QEMU_LAYOUT.with_vectors(default_vectors(model.pairs) if vectors is None
                                      else vectors)
    known = getattr(model, "features_known", True)
    return VirtioPCIFunction(model, layout=layout, interfaces=ifs, name=name,
                             subsystem_id=virtio_pci.QEMU_SUBSYSTEM_ID, realize=known)
