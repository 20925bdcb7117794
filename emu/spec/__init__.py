"""The specifications both sides of a bus must agree on, one module per
spec area, in the spec's own words:

* :mod:`emu.spec.virtio` -- virtio core (VIRTIO 1.2 §2, §6): device status,
  reserved feature bits, notification bits, queue size limit;
* :mod:`emu.spec.virtio_pci` -- the virtio-pci transport (§4.1): ids,
  vendor capabilities, the common configuration layout;
* :mod:`emu.spec.virtio_ring` -- split virtqueues (§2.7): descriptor flags,
  element sizes and alignment, the size rule;
* :mod:`emu.spec.virtio_ring_packed` -- packed virtqueues (§2.8): the
  AVAIL/USED rule, event suppression, sizes and alignment;
* :mod:`emu.spec.virtio_net` -- the network device (§5.1);
* :mod:`emu.spec.vhost` -- the feature bits vhost owns in the virtio
  feature space;
* :mod:`emu.spec.pci` -- PCI configuration space (PCI Local Bus 3.0);
* :mod:`emu.spec.qemu_net` -- QEMU's network layer on the wire: the socket
  netdev's framing, NET_BUFSIZE, the self-announce frame;
* :mod:`emu.spec.vhost_pci_net` -- emu's vhost-pci-net device
  (``docs/vhost-pci-device.md``): BARs, device configuration, metadata page.

Device models (emu.virtio), drivers (emu.guest), the ring engine
(emu.ring) and vhost-user (emu.vhost_user) all read their constants here,
so the two sides of a bus cannot disagree.  This package is the floor: it
imports nothing else of emu.  ``tests/spec`` pins it to Linux's UAPI
headers and to the C engine.
"""
