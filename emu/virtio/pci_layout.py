"""Where a virtio-pci function puts its structures, and which interfaces it
has (virtio 1.2 §4.1).

:class:`VirtioPCILayout` is the modern interface's BAR and offsets, the
MSI-X BAR, and how the capabilities are written:

* ``cap_style="emu"`` (emu's own devices, ``docs/vhost-pci-device.md``):
  the MSI-X capability first, the vendor capabilities after it in list
  order, each announcing the length of its structure;
* ``cap_style="qemu"`` (QEMU 7.2's ``virtio_pci_device_plugged``): the
  vendor capabilities first (common, ISR, device, notify, PCI_CFG) and
  MSI-X last, each new one linked at the head of the list (so the chain
  reads MSI-X 0x98 -> PCI_CFG 0x84 -> notify 0x70 -> device 0x60 -> ISR
  0x50 -> common 0x40), each announcing its whole region (0x1000).

:data:`QEMU_LAYOUT` is QEMU's virtio-net-pci: BAR0 the legacy I/O
interface, BAR1 MSI-X (table 0x0, PBA 0x800 of 4 KiB), BAR4 the modern
structures, 64-bit prefetchable, 16 KiB (common 0x0, ISR 0x1000, device
0x2000, notify 0x3000 with multiplier 4).

:class:`Interfaces` says which of the modern and legacy interfaces a
function has (QEMU's ``disable-legacy`` / ``disable-modern``), with
QEMU's rule for a device whose features lack VERSION_1.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from emu.errors import PeerError
from emu.spec.virtio import F_VERSION_1


@dataclass(frozen=True)
class VirtioPCILayout:
    """Where the transport's structures live.  Offsets are within BAR ``bar``."""

    bar: int = 0
    bar_size: int = 0x4000
    bar_kind: str = "mem32"
    bar_prefetchable: bool = False
    common_offset: int = 0x0000
    common_length: int = 0x40
    isr_offset: int = 0x1000
    isr_length: int = 0x4
    device_offset: int = 0x2000
    device_length: int = 0x1000          # room; the capability announces config_size
    notify_offset: int = 0x3000
    notify_length: int = 0x1000
    notify_off_multiplier: int = 4
    msix_bar: int = 1
    msix_bar_size: int = 0x1000
    msix_table_offset: int = 0x0
    msix_pba_offset: int = 0x800
    msix_vectors: int | None = None      # default: one per queue + config; 0: no MSI-X
    pci_cfg_cap: bool = True
    cap_style: str = "emu"               # "emu" | "qemu": see the module text
    legacy_bar: int = 0                  # the legacy I/O BAR, when the function has one

    def __post_init__(self):
        if self.cap_style not in ("emu", "qemu"):
            raise ValueError(f"unknown capability style {self.cap_style!r}")

    def with_vectors(self, vectors: int | None) -> "VirtioPCILayout":
        return self if vectors is None else replace(self, msix_vectors=vectors)


#: QEMU 7.2's virtio-pci layout (hw/virtio/virtio-pci.c, virtio_pci_realize)
QEMU_LAYOUT = VirtioPCILayout(bar=4, bar_size=0x4000, bar_kind="mem64", bar_prefetchable=True,
                              common_length=0x1000, isr_length=0x1000, device_length=0x1000,
                              notify_length=0x1000, cap_style="qemu", legacy_bar=0)


class InterfaceError(PeerError):
    """A configuration that leaves a function with no interface (QEMU's
    realize errors, same texts)."""


@dataclass(frozen=True)
class Interfaces:
    """Which interfaces a function has.  ``legacy``/``modern`` as asked
    (``disable-legacy=off``, ``disable-modern=off``)."""

    legacy: bool = False
    modern: bool = True

    def __post_init__(self):
        if not self.legacy and not self.modern:
            raise InterfaceError("device cannot work as neither modern nor legacy mode is "
                                 "enabled (set either disable-modern or disable-legacy to off)")

    @property
    def transitional(self) -> bool:
        return self.legacy and self.modern

    def for_features(self, features: int) -> "Interfaces":
        """QEMU's virtio_pci_device_plugged: "Virtio capabilities present
        without VIRTIO_F_VERSION_1 confuses guests" -- a device that does
        not offer VERSION_1 (a vhost-user back-end without it) keeps only
        the legacy interface, and cannot work without one."""
        if features & F_VERSION_1 or not self.modern:
            return self
        if not self.legacy:
            raise InterfaceError("Device doesn't support modern mode, and legacy mode is "
                                 "disabled (set disable-legacy to off)")
        return Interfaces(legacy=True, modern=False)
