"""The machine's serial ports: a 16550 UART per ``-serial`` / ``-device
isa-serial`` at QEMU's ISA I/O bases (COM1 0x3f8 ...), each with the
chardev backend its output goes to (:mod:`emu.char`).

The UARTs join the platform's I/O space as one layer, above the PCI
BARs (as the chipset's ISA decode is), so the guest program -- or a qtest
client -- reaches them with port accesses like any other register.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from emu.config import ISA_SERIAL_PORTS, MachineConfig

if TYPE_CHECKING:
    from emu.char.backends import Backend

SERIAL_LAYER = "isa-serial"


class SerialPorts:
    def __init__(self, cfg: MachineConfig, platform: Any, created: Any = None):
        """*created*: the launcher's :class:`~emu.launcher.build.Created` (files
        a failed start-up removes again)."""
        from emu import fdset
        opener = (lambda path, flags: created.open(path, flags, cfg.fdsets)) if created else \
            (lambda path, flags: fdset.open_path(path, flags, 0o666, cfg.fdsets))
        self.opener = opener
        self.platform = platform
        self.ports: list[tuple[Any, Any, Backend]] = []     # (SerialPort, Uart16550, Backend)
        if not cfg.serials:
            return
        # the UART and the backends, only for a machine that has serial ports
        from emu.address_space import Region
        from emu.char.backends import create
        from emu.char.uart import UART_SIZE, Uart16550
        regions = []
        for port in sorted(cfg.serials, key=lambda s: s.index):
            chardev = cfg.chardev(port.chardev)
            assert chardev is not None, "parse_args checked the reference"
            backend = create(chardev, cfg.fdsets, opener)
            base, _irq = ISA_SERIAL_PORTS[port.index]
            uart = Uart16550(port.id or f"serial{port.index}", backend, lock=platform.lock,
                             rx_room_changed=backend.rx_room_changed)
            backend.attach(uart)
            self.ports.append((port, uart, backend))
            regions.append(Region(base, base + UART_SIZE, uart, name=f"serial@0x{base:x}"))
        if regions:
            from emu.machines.platform import PLATFORM_PRIORITY
            platform.io.set_layer(SERIAL_LAYER, regions, PLATFORM_PRIORITY)

    async def open(self) -> None:
        """Open every backend (a server=on,wait=on socket waits for its
        client here, as QEMU); :class:`~emu.launcher.build.StartupError`
        names the option of one that cannot be opened."""
        from emu.launcher.errors import StartupError
        if not self.ports:
            return
        from emu.char.backends import ChardevError
        loop = asyncio.get_running_loop()
        for port, _uart, backend in self.ports:
            try:
                backend.open_log(self.opener)
                await backend.open(loop)
            except ChardevError as e:
                raise StartupError(backend.cfg.origin or port.origin, str(e)) from None
            except OSError as e:
                raise StartupError(backend.cfg.origin or port.origin,
                                   f"cannot open chardev '{backend.id}': {e.strerror}") from None

    async def close(self) -> None:
        for _port, _uart, backend in self.ports:
            try:
                await backend.close()
            except Exception:   # closing must go on for the others
                pass
            backend.close_log()
        if self.ports and self.platform is not None:
            self.platform.io.set_layer(SERIAL_LAYER, [], _priority())
        self.platform = None

    def chardev_info(self) -> list[dict[str, Any]]:
        return [backend.info() for _, _, backend in self.ports]

    def stats(self) -> list[dict[str, Any]]:
        return [{"id": uart.name, "chardev": backend.id, "iobase": ISA_SERIAL_PORTS[port.index][0],
                 **uart.stats(), **backend.stats()} for port, uart, backend in self.ports]


def _priority() -> int:
    from emu.machines.platform import PLATFORM_PRIORITY
    return PLATFORM_PRIORITY
