"""The device side of a packed control queue (VIRTIO 1.2 §2.8), served in
Python by a device model (virtio-net's control queue, which the device
model keeps for itself as QEMU does): a few commands, never a data path.

Every descriptor is read once (one struct unpack of its 16 bytes) after
its flags, which are the publication point; the used descriptor's flags
are one aligned 16-bit store after its id and length.  A chain whose
descriptors are not all available, or that does not end within the ring,
stops the queue: its end is nowhere, so no later chain can be found.
"""
from __future__ import annotations

from typing import Callable

from emu.spec import virtio_ring as R, virtio_ring_packed as P


class PackedCtrlRing:
    """Position and wrap counter of the device in one packed ring."""

    def __init__(self, ram, max_read: int):
        self.ram = ram
        self.max_read = max_read          # bytes of one command read
        self.reset()

    def reset(self) -> None:
        self.pos, self.wrap = 0, 1
        self.broken = False

    def _flags(self, desc: int, pos: int):
        return self.ram.view(desc + P.DESC_SIZE * pos + P.DESC_FLAGS, 2, dtype="<u2")

    def serve(self, q, command: Callable[[bytes], tuple[int, int] | None],
              error: Callable[[str], None]) -> int:
        """Serve every available chain of queue ``q`` (a QueueConfig):
        ``command(readable)`` -> (status byte, or None for no ack).  Returns
        how many chains were completed."""
        served = 0
        while not self.broken and served < q.size:
            if not P.is_avail(int(self._flags(q.desc, self.pos)[0]), self.wrap):
                break
            readable, ack, n, bid = b"", None, 0, 0
            pos, wrap = self.pos, self.wrap
            while True:
                if n == q.size:
                    return self._broken(error, "control chain longer than the ring", served)
                addr, length, bid, flags = P.DESC.unpack(self.ram.read(q.desc + P.DESC_SIZE * pos,
                                                                       P.DESC_SIZE))
                if not P.is_avail(flags, wrap):
                    return self._broken(error, "control chain runs into a descriptor that is "
                                               "not available", served)
                n += 1
                if flags & R.DESC_F_WRITE:
                    ack = addr
                elif len(readable) < self.max_read:
                    readable += self.ram.read(addr, min(length, self.max_read))
                pos += 1
                if pos == q.size:
                    pos, wrap = 0, wrap ^ 1
                if not flags & R.DESC_F_NEXT:
                    break
            status = command(readable)
            written = 0
            if ack is not None and status is not None:
                self.ram.write(ack, bytes([status]))
                written = 1
            at = q.desc + P.DESC_SIZE * self.pos
            self.ram.write(at + P.DESC_LEN, written.to_bytes(4, "little") + bid.to_bytes(2, "little"))
            self._flags(q.desc, self.pos)[0] = P.used_flags(self.wrap) | R.DESC_F_WRITE
            self.pos, self.wrap = pos, wrap
            served += 1
        return served

    def _broken(self, error, why: str, served: int) -> int:
        self.broken = True
        error(why)
        return served
