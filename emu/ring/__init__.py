"""Python face of the C virtqueue engine (``emu/_ring.c``, split rings, and
``emu/_ring_packed.c``, packed rings: a queue's format is its features').

Objects here own C structs and keep alive whatever memory those point
into; no other module touches the engine's structs.  Python calls C once
per *burst*, never per packet; cffi releases the GIL during every call, so
a :class:`Pump` thread spins in C beside Python.

* :class:`RegionTable` (``regions``) -- a :class:`~emu.memory.GuestMemory`'s
  regions as the C engine sees them, plus the dirty log.
* :class:`DeviceQueue`, :class:`DriverQueue`, :func:`copy` (``queues``) --
  the device side of a split ring (a vhost back-end, or VM2's vhost-pci
  driver working on VM1's rings), the driver side (a guest virtio-net
  driver), and the one-copy path of vhost-pci between two memories.
* :class:`Pump` (``pump``) -- a data-path thread running jobs until stopped.
* :class:`NetPort`, :class:`Hub` (``netport``) -- virtio-net's data path
  inside emu: a NIC's queues to and from a stream socket, or between the
  NICs of a hub.
* :class:`Generator`, :class:`Sink` (``traffic``) -- traffic made and
  checked in C.
* :class:`Capture` (``capture``) -- the frame recorder a queue writes into.
* :class:`Burst`, :class:`RingError` (``burst``) -- what a call reports.
* ``packed`` -- the packed ring's state a queue of that format carries.

The ring layout itself (sizes, flags, the queue size rule) is the spec's:
:mod:`emu.spec.virtio_ring` and :mod:`emu.spec.virtio_ring_packed`.
"""
from __future__ import annotations

from emu.ring.burst import Burst, RingError
from emu.ring.capture import Capture
from emu.ring.netport import Hub, NetPort
from emu.ring.pump import Pump
from emu.ring.queues import DeviceQueue, DriverQueue, copy
from emu.ring.regions import RegionTable
from emu.ring.traffic import Generator, Sink, expected_frame, memcpy_ns

__all__ = ["Burst", "Capture", "DeviceQueue", "DriverQueue", "Generator", "Hub", "NetPort", "Pump",
           "RegionTable", "RingError", "Sink", "copy", "expected_frame", "memcpy_ns"]
