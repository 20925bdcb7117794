"""The base of the chipset's PCI functions: QEMU's conventions for a
built-in device (hw/pci/pci.c), which differ from emu's device models'.

* Write masks as ``pci_init_wmask``: the command register's I/O, memory,
  bus-master, SERR and INTx-disable bits, cache line size, interrupt line,
  and every device-specific byte 0x40..0xFF (a register the device does
  not give a meaning to is plain storage, as in QEMU).
* Subsystem ids 1af4:1100 (QEMU's for devices that set none).
* The header type is the device's own (no multi-function bit added by
  the bus: PIIX3 sets it on function 0, the other functions do not).
* Reset as QEMU's: the device's own reset (:meth:`reset_registers`, QEMU's
  ``DeviceClass.reset``) first, then the PCI reset of the header
  (``pci_do_device_reset``: command, status, interrupt line, cache line,
  BARs); device-specific registers the device's reset does not set keep
  their value (QEMU's i440FX keeps its PAM registers across a reset).
* Writes call :meth:`config_changed` for the registers with side effects.
"""
from __future__ import annotations

from emu.pci.function import PCIFunction
from emu.spec import pci as regs

QEMU_SUBSYSTEM_VENDOR_ID = 0x1AF4     # PCI_SUBVENDOR_ID_REDHAT_QUMRANET
QEMU_SUBSYSTEM_ID = 0x1100            # PCI_SUBDEVICE_ID_QEMU
QEMU_COMMAND_WMASK = (regs.COMMAND_IO | regs.COMMAND_MEMORY | regs.COMMAND_MASTER
                      | regs.COMMAND_SERR | regs.COMMAND_INTX_DISABLE)
DEVICE_SPECIFIC = regs.CAP_START      # 0x40: the first device-specific register
CONVENTIONAL_END = regs.CONVENTIONAL_SIZE


class ChipsetFunction(PCIFunction):
    #: whether ACPI hotplug may eject it (QEMU: DeviceClass.hotpluggable)
    hotpluggable = False

    def __init__(self, vendor_id: int, device_id: int, class_code: int, *, revision: int = 0,
                 interrupt_pin: int = 0, header_type: int = regs.HEADER_TYPE_NORMAL,
                 status: int = 0, name: str = ""):
        super().__init__(vendor_id, device_id, class_code, revision=revision,
                         subsystem_vendor_id=QEMU_SUBSYSTEM_VENDOR_ID,
                         subsystem_id=QEMU_SUBSYSTEM_ID, interrupt_pin=interrupt_pin, name=name)
        self._put_wmask(regs.COMMAND, 2, QEMU_COMMAND_WMASK)
        self.wmask[DEVICE_SPECIFIC:CONVENTIONAL_END] = b"\xff" * (CONVENTIONAL_END - DEVICE_SPECIFIC)
        self.power_on(regs.HEADER_TYPE, bytes([header_type]))
        self.power_on(regs.STATUS, status.to_bytes(2, "little"))

    def power_on(self, offset: int, data: bytes) -> None:
        """Registers' power-on contents (before the function is plugged)."""
        self.config[offset:offset + len(data)] = data
        self._defaults[offset:offset + len(data)] = data

    def readonly(self, offset: int, length: int = 1) -> None:
        """Device-specific bytes the guest cannot change."""
        self.wmask[offset:offset + length] = bytes(length)

    def set_multifunction(self) -> None:
        """The header type is the device's own (see the module docstring)."""

    # -- guest side ---------------------------------------------------------------------
    def config_write(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            super().config_write(offset, size, value)
            if 0 <= offset and offset + size <= CONVENTIONAL_END:
                self.config_changed(offset, size)

    def config_changed(self, offset: int, size: int) -> None:
        """Subclass hook: ``[offset, offset+size)`` was written."""

    @staticmethod
    def touches(offset: int, size: int, reg: int, length: int = 1) -> bool:
        return offset < reg + length and reg < offset + size

    # -- reset --------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.reset_registers()
            kept = bytes(self.config[DEVICE_SPECIFIC:CONVENTIONAL_END])
            super().reset()
            self.config[DEVICE_SPECIFIC:CONVENTIONAL_END] = kept
            self.after_reset()

    def reset_registers(self) -> None:
        """Subclass hook: the device's own reset (QEMU's DeviceClass.reset)."""

    def after_reset(self) -> None:
        """Subclass hook: re-derive state from the registers after a reset."""
