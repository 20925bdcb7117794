"""PCI configuration space (PCI Local Bus 3.0, type 0 header; MSI-X from
PCI 3.0 §6.8.2): register offsets and bits, named as in Linux's
``pci_regs.h`` without its ``PCI_`` prefix.  The device side (emu.pci) and
the guest's firmware and drivers (emu.guest) both read them here."""
from __future__ import annotations

CONFIG_SPACE_SIZE = 0x1000      # 4 KiB: conventional 256 B + extended space
CONVENTIONAL_SIZE = 0x100

VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_PROG = 0x09               # class code: prog-if 0x09, subclass 0x0a, base 0x0b
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BIST = 0x0F
BASE_ADDRESS_0 = 0x10
BASE_ADDRESS_END = 0x28         # six BAR registers, 0x10..0x27
CARDBUS_CIS = 0x28
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
ROM_ADDRESS = 0x30
CAPABILITY_LIST = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D
MIN_GNT = 0x3E
MAX_LAT = 0x3F
CAP_START = 0x40                # first byte a capability may use

HEADER_TYPE_NORMAL = 0x00
HEADER_TYPE_MULTI_FUNCTION = 0x80

# command register
COMMAND_IO = 0x0001
COMMAND_MEMORY = 0x0002
COMMAND_MASTER = 0x0004
COMMAND_PARITY = 0x0040
COMMAND_SERR = 0x0100
COMMAND_INTX_DISABLE = 0x0400
COMMAND_WRITABLE = (COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_PARITY
                    | COMMAND_SERR | COMMAND_INTX_DISABLE)

# status register
STATUS_INTERRUPT = 0x0008       # RO: the function's INTx is asserted
STATUS_CAP_LIST = 0x0010        # RO: capability list present
STATUS_PARITY = 0x0100          # RW1C: master data parity error
STATUS_SIG_TARGET_ABORT = 0x0800
STATUS_REC_TARGET_ABORT = 0x1000
STATUS_REC_MASTER_ABORT = 0x2000
STATUS_SIG_SYSTEM_ERROR = 0x4000
STATUS_DETECTED_PARITY = 0x8000
STATUS_W1C = (STATUS_PARITY | STATUS_SIG_TARGET_ABORT | STATUS_REC_TARGET_ABORT
              | STATUS_REC_MASTER_ABORT | STATUS_SIG_SYSTEM_ERROR
              | STATUS_DETECTED_PARITY)

# base address registers
BAR_SPACE_IO = 0x01
BAR_MEM_TYPE_64 = 0x04
BAR_MEM_PREFETCH = 0x08
BAR_MEM_FLAGS = 0x0F
BAR_IO_FLAGS = 0x03
NUM_BARS = 6

# capability ids
CAP_ID_MSI = 0x05
CAP_ID_VNDR = 0x09
CAP_ID_EXP = 0x10
CAP_ID_MSIX = 0x11
CAP_MAX_COUNT = 48              # Linux's walk limit: (256 - 64) / 4

# MSI-X capability (offsets from the capability start)
MSIX_FLAGS = 0x02               # message control
MSIX_TABLE = 0x04
MSIX_PBA = 0x08
MSIX_CAP_SIZE = 0x0C
MSIX_FLAGS_QSIZE = 0x07FF
MSIX_FLAGS_MASKALL = 0x4000
MSIX_FLAGS_ENABLE = 0x8000
MSIX_BIR_MASK = 0x7
MSIX_ENTRY_SIZE = 16
MSIX_ENTRY_ADDR_LO = 0x0
MSIX_ENTRY_ADDR_HI = 0x4
MSIX_ENTRY_DATA = 0x8
MSIX_ENTRY_VECTOR_CTRL = 0xC
MSIX_ENTRY_CTRL_MASKBIT = 0x1
MSIX_MAX_VECTORS = 2048

# x86 MSI address window (the local APICs)
MSI_ADDR_BASE = 0xFEE00000

INTX_PINS = 4                   # INTA..INTD
