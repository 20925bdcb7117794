"""A small machine for the protocol tests: RAM as a bytearray, a few I/O
ports and one MMIO register, a virtual clock with timers, and one IRQ
controller whose inputs can be intercepted."""
from __future__ import annotations

from emu.errors import GuestMemoryError
from emu.qtest.errors import TargetError

RAM_SIZE = 1 << 20
MMIO_REG = 0xFEE0_0000          # one 4-byte register; accesses of other sizes are refused
PORT_SCRATCH = 0x80             # keeps the last value written, any size
PORT_IRQ = 0x99                 # outb N: raises line N (0 lowers it: value 0x100 | N)
PORT_FAULT = 0x9A               # any access is refused by the target


class FakeTarget:
    def __init__(self):
        self.ram = bytearray(RAM_SIZE)
        self.scratch = 0
        self.mmio = 0
        self.accesses: list[tuple] = []
        self.clock = 0
        self.timers: list[int] = []          # deadlines (ns), fired when passed
        self.fired: list[int] = []
        self.devices = {"ioapic": "ioapic", "/machine/ioapic": "ioapic",
                        "/machine/unattached/device[0]": "cpu"}
        self.notify = None
        self.intercepted: list[tuple] = []
        self.irq_inputs: dict[tuple, int] = {}

    # -- I/O ports
    def io_read(self, port: int, size: int) -> int:
        self.accesses.append(("in", port, size))
        if port == PORT_SCRATCH:
            return self.scratch & ((1 << (8 * size)) - 1)
        if port == PORT_FAULT:
            raise TargetError(f"port 0x{port:x} refuses access")
        return (1 << (8 * size)) - 1           # unassigned: all ones, as QEMU

    def io_write(self, port: int, size: int, value: int) -> None:
        self.accesses.append(("out", port, size, value))
        if port == PORT_SCRATCH:
            self.scratch = value
        elif port == PORT_IRQ and self.notify is not None:
            self.notify(value & 0xFF, 0 if value & 0x100 else 1)
        elif port == PORT_FAULT:
            raise TargetError(f"port 0x{port:x} refuses access")

    # -- memory
    def _ram(self, addr: int, n: int) -> slice:
        if addr + n > RAM_SIZE:
            raise GuestMemoryError(f"0x{addr:x}+0x{n:x} is outside RAM")
        return slice(addr, addr + n)

    def mem_read(self, addr: int, size: int) -> int:
        self.accesses.append(("read", addr, size))
        if addr == MMIO_REG:
            if size != 4:
                raise TargetError("MMIO register takes 4-byte accesses only")
            return self.mmio
        return int.from_bytes(self.ram[self._ram(addr, size)], "little")

    def mem_write(self, addr: int, size: int, value: int) -> None:
        self.accesses.append(("write", addr, size, value))
        if addr == MMIO_REG:
            if size != 4:
                raise TargetError("MMIO register takes 4-byte accesses only")
            self.mmio = value
            return
        self.ram[self._ram(addr, size)] = value.to_bytes(size, "little")

    def mem_read_bytes(self, addr: int, length: int) -> bytes:
        return bytes(self.ram[self._ram(addr, length)])

    def mem_write_bytes(self, addr: int, data: bytes) -> None:
        self.ram[self._ram(addr, len(data))] = data

    # -- clock
    def _warp(self, dest: int) -> None:
        for t in sorted(self.timers):
            if t <= dest:
                self.timers.remove(t)
                self.fired.append(t)
        self.clock = max(self.clock, dest)

    def clock_step(self, ns: int | None) -> int:
        if ns is None:
            if self.timers:
                self._warp(min(self.timers))
            return self.clock
        self._warp(self.clock + ns)
        return self.clock

    def clock_set(self, ns: int) -> int:
        self._warp(ns)
        return self.clock

    # -- IRQs
    def resolve_device(self, path: str):
        return self.devices.get(path)

    def irq_intercept(self, device, direction, notify) -> None:
        self.intercepted.append((device, direction))
        self.notify = notify

    def set_irq_in(self, device, name, num, level) -> None:
        if device != "ioapic" or name is not None or num >= 24:
            raise TargetError(f"{device} has no input {name}[{num}]")
        self.irq_inputs[(name, num)] = level
        if self.notify is not None:
            self.notify(num, level)

    def module_load(self, prefix: str, name: str) -> bool:
        return prefix == "accel"          # built in: OK, as QEMU without CONFIG_MODULES
