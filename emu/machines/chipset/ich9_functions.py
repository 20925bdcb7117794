"""The other ICH9 functions QEMU's q35 has by default: 00:1F.2 AHCI (SATA,
8086:2922) and 00:1F.3 SMBus (8086:2930), with QEMU 7.2's configuration
space (``hw/ide/ich.c``, ``hw/i2c/smbus_ich9.c``): ids, class, BARs and
the AHCI function's MSI and SATA capabilities, so firmware sizes and
places them as on QEMU.

Their registers are not modelled (emu has no disks and no SMBus devices):
the BARs are there, an access to them reads all ones and is dropped,
counted as a guest error ("unimplemented").
"""
from __future__ import annotations

from emu.machines.chipset.function import ChipsetFunction
from emu.pci.errors import GuestAccessError
from emu.spec import pci as regs

VENDOR_ID = 0x8086
AHCI_DEVICE_ID = 0x2922         # ICH9 6-port SATA AHCI
AHCI_REVISION = 0x02
CLASS_SATA_AHCI = 0x010601
AHCI_STATUS = 0x0010            # capability list
SMBUS_DEVICE_ID = 0x2930
SMBUS_REVISION = 0x02
CLASS_SMBUS = 0x0C0500
# AHCI: MSI at 0x80 (64-bit, one vector), SATA capability at 0xA8 (index/data pair in BAR4)
AHCI_MSI_CAP = 0x80
AHCI_SATA_CAP = 0xA8
CAP_ID_SATA = 0x12
AHCI_MAP = 0x90                 # address map register
AHCI_MAP_DEFAULT = 0x40         # AHCI mode
SMBUS_HOSTC = 0x40
SMBUS_HOSTC_WMASK = 0xF7


class _Unimplemented:
    def __init__(self, name: str):
        self.name = name

    def read(self, offset: int, size: int) -> int:
        raise GuestAccessError("unimplemented", f"{self.name}: register 0x{offset:x} not modelled")

    def write(self, offset: int, size: int, value: int) -> None:
        raise GuestAccessError("unimplemented", f"{self.name}: register 0x{offset:x} not modelled")


class ICH9AHCI(ChipsetFunction):
    def __init__(self):
        super().__init__(VENDOR_ID, AHCI_DEVICE_ID, CLASS_SATA_AHCI, revision=AHCI_REVISION,
                         interrupt_pin=1, status=AHCI_STATUS,
                         header_type=regs.HEADER_TYPE_MULTI_FUNCTION, name="ich9-ahci")
        self.add_bar(4, 32, "io", ops=_Unimplemented("ahci-idp"))
        self.add_bar(5, 4096, "mem32", ops=_Unimplemented("ahci"))
        self.power_on(regs.CAPABILITY_LIST, bytes([AHCI_MSI_CAP]))
        # MSI: id, next -> SATA, message control "64-bit capable", one vector
        self.power_on(AHCI_MSI_CAP, bytes([regs.CAP_ID_MSI, AHCI_SATA_CAP, 0x80, 0x00]))
        self.readonly(AHCI_MSI_CAP, 4)
        self.wmask[AHCI_MSI_CAP + 2] = 0x01                  # MSI enable
        self.wmask[AHCI_MSI_CAP + 4] = 0xFC                  # message address: dword aligned
        self.power_on(AHCI_MAP, bytes([AHCI_MAP_DEFAULT]))
        # SATA capability: revision 1.0, index/data pair in BAR4 at offset 0
        self.power_on(AHCI_SATA_CAP, bytes([CAP_ID_SATA, 0x00, 0x10, 0x00, 0x48, 0x00, 0x00, 0x00]))
        self.readonly(AHCI_SATA_CAP, 8)


class ICH9SMBus(ChipsetFunction):
    def __init__(self):
        super().__init__(VENDOR_ID, SMBUS_DEVICE_ID, CLASS_SMBUS, revision=SMBUS_REVISION,
                         interrupt_pin=1, header_type=regs.HEADER_TYPE_MULTI_FUNCTION,
                         name="ich9-smbus")
        self.add_bar(4, 64, "io", ops=_Unimplemented("ich9-smbus"))
        self.wmask[SMBUS_HOSTC] = SMBUS_HOSTC_WMASK
