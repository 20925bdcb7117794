"""The x86 PC machine types: QEMU 7.2's ``pc`` (i440FX + PIIX3, 1996) and
``q35`` (MCH + ICH9, 2009), assembled from the chipset pieces of
:mod:`emu.machines.chipset`.

Both have: RAM split around the PCI hole (:mod:`emu.machines.ram_layout`),
the I/O APIC (:mod:`emu.machines.ioapic`) at 0xFEC00000 with its 24
inputs, the local APIC's MSI window, CF8/CFC, the reset control register
at 0xCF9, the APM ports, fw_cfg at 0x510 (:mod:`emu.machines.fw_cfg`).

=========== ================================ ==================================
            pc                               q35
=========== ================================ ==================================
00:00.0     i440FX host bridge 8086:1237     MCH host bridge 8086:29c0
ISA bridge  00:01.0 PIIX3 8086:7000          00:1f.0 ICH9 LPC 8086:2918
storage     00:01.1 PIIX3 IDE 8086:7010      00:1f.2 ICH9 AHCI 8086:2922
other       00:01.3 PIIX4 ACPI 8086:7113     00:1f.3 ICH9 SMBus 8086:2930
PCI INTx    PIRQ A-D -> ISA IRQ (0x60-0x63)  PIRQ A-H -> GSI 16-23 (+ ISA IRQ)
ACPI        PM block, GPE0 0xAFE0, SCI IRQ 9  not modelled
hotplug     ACPI, I/O 0xAE00 (PIIX4)         none (QEMU: "Bus 'pcie.0' does not
                                             support hotplugging")
=========== ================================ ==================================

QEMU's other built-in ISA devices (8259 PICs, PIT, RTC/CMOS, keyboard
controller, DMA controllers, HPET) and the default VGA are not modelled.
"""
from __future__ import annotations

import struct

from emu.machines import ram_layout
from emu.machines.board import Board
from emu.machines.chipset.i440fx import I440FX
from emu.machines.chipset.piix3 import PIIX3
from emu.machines.chipset.piix4_pm import PIIX4PM, S4_TYPE
from emu.machines.chipset.piix_ide import PIIX3IDE
from emu.machines.fw_cfg import (FW_CFG_ACPI_TABLES, FW_CFG_BOOT_MENU, FW_CFG_HPET,
                                 FW_CFG_IRQ0_OVERRIDE, FW_CFG_MAX_CPUS, FW_CFG_NB_CPUS,
                                 FW_CFG_NOGRAPHIC, FW_CFG_NUMA, FW_CFG_RAM_SIZE, FW_CFG_UUID, FwCfg)
from emu.machines.hotplug import PciHotplug
from emu.machines.ioapic import IOAPIC
from emu.machines.platform import OVERLAP_PRIORITY, PLATFORM_PRIORITY, Platform

HPET_FW_CFG_ENTRIES = 8
HPET_FW_CFG = struct.Struct("<B" + "IQHB" * HPET_FW_CFG_ENTRIES)   # struct hpet_fw_config
BOOT_FAIL_WAIT = 0xFFFFFFFF         # -boot reboot-timeout: -1 (none)


def system_states(s4_type: int = S4_TYPE) -> bytes:
    """fw_cfg ``etc/system-states`` (QEMU's acpi_pm1_cnt_init): S3 and S4
    enabled, with their SLP_TYP values."""
    return bytes([128, 0, 0, 1 | 0x80, s4_type | 0x80, 128])


def _fw_cfg(p: Platform, board: Board, layout: ram_layout.RamLayout, states: bytes) -> FwCfg:
    """The items QEMU 7.2's ``fw_cfg_arch_create`` and the common part give
    an x86 machine (without ACPI tables, SMBIOS and option ROMs)."""
    fw = FwCfg(p.memory)
    fw.add_bytes(FW_CFG_UUID, bytes(16))
    fw.add_i16(FW_CFG_NOGRAPHIC, 0)
    fw.add_i16(FW_CFG_BOOT_MENU, 0)
    fw.add_i16(FW_CFG_NB_CPUS, board.cpus)
    fw.add_i16(FW_CFG_MAX_CPUS, board.apic_id_limit)
    fw.add_i64(FW_CFG_RAM_SIZE, layout.ram_size)
    fw.add_bytes(FW_CFG_ACPI_TABLES, None)
    fw.add_i32(FW_CFG_IRQ0_OVERRIDE, 1)
    fw.add_bytes(FW_CFG_HPET, bytes(HPET_FW_CFG.size))        # no HPET: count 0
    nodes = board.numa_nodes
    numa = [len(nodes)] + [0] * board.apic_id_limit + list(nodes)
    fw.add_bytes(FW_CFG_NUMA, struct.pack(f"<{len(numa)}Q", *numa))
    fw.add_file("bios-geometry", b"")
    fw.add_file("bootorder", b"")
    fw.add_file("etc/boot-fail-wait", struct.pack("<I", BOOT_FAIL_WAIT))
    fw.add_file("etc/e820", layout.e820_bytes())
    fw.add_file("etc/system-states", states)
    return fw


def _common(p: Platform, board: Board, layout: ram_layout.RamLayout) -> IOAPIC:
    p.ram_layout = layout
    ioapic = IOAPIC(p.irq)
    p.ioapic = ioapic
    p.memory.set_layer("ioapic", [ioapic.region()], PLATFORM_PRIORITY)
    return ioapic


def _board(machine_type, ram, board: Board | None) -> Board:
    if board is not None:
        return board
    return Board(ram_size=ram.size if ram is not None else Board().ram_size)


def build_pc(machine_type, *, lock=None, ram=None, board: Board | None = None) -> Platform:
    board = _board(machine_type, ram, board)
    layout = ram_layout.pc_layout(board.ram_size, board.max_ram_below_4g)
    p = Platform(machine_type, lock=lock, pci=True, ram=ram)
    ioapic = _common(p, board, layout)
    hotplug = PciHotplug(p.pci)
    i440fx = I440FX(board.ram_size)
    piix3 = PIIX3(ioapic, reset_request=p.request_reset)
    ide = PIIX3IDE()
    pm = PIIX4PM(p.io, ioapic, p.now, cpus=board.cpus, fixed_slots=hotplug.fixed_slots,
                 eject=hotplug.eject, power_off=p.request_power_off, priority=PLATFORM_PRIORITY)
    hotplug.pcihp = pm.pcihp
    p.hotplug = hotplug
    p.pci.set_router(piix3)
    p.plug(i440fx, 0, 0)
    p.plug(piix3, 1, 0)
    p.plug(ide, 1, 1)
    p.plug(pm, 1, 3)
    p.fw_cfg = _fw_cfg(p, board, layout, system_states())
    p.io.set_layer("reset-control", [piix3.rcr.region()], OVERLAP_PRIORITY)
    p.io.set_layer("chipset", pm.fixed_regions() + p.fw_cfg.regions(), PLATFORM_PRIORITY)
    p.chipset.update({"i440fx": i440fx, "piix3": piix3, "piix3-ide": ide, "piix4-pm": pm,
                      "fw_cfg": p.fw_cfg})
    return p


def build_q35(machine_type, *, lock=None, ram=None, board: Board | None = None) -> Platform:
    from emu.machines.chipset.ich9_functions import ICH9AHCI, ICH9SMBus
    from emu.machines.chipset.ich9_lpc import ICH9LPC
    from emu.machines.chipset.mch import MCH
    board = _board(machine_type, ram, board)
    layout = ram_layout.q35_layout(board.ram_size, board.max_ram_below_4g)
    p = Platform(machine_type, lock=lock, pci=True, ram=ram)
    ioapic = _common(p, board, layout)
    mch = MCH(layout, p.memory, PLATFORM_PRIORITY)
    lpc = ICH9LPC(ioapic, reset_request=p.request_reset, memory=p.memory,
                  priority=PLATFORM_PRIORITY)
    sata, smbus = ICH9AHCI(), ICH9SMBus()
    p.pci.set_router(lpc)
    p.plug(mch, 0, 0)
    p.plug(lpc, 0x1F, 0)
    p.plug(sata, 0x1F, 2)
    p.plug(smbus, 0x1F, 3)
    p.fw_cfg = _fw_cfg(p, board, layout, system_states())
    p.io.set_layer("reset-control", [lpc.rst_cnt.region()], OVERLAP_PRIORITY)
    p.io.set_layer("chipset", [lpc.apm.region()] + p.fw_cfg.regions(), PLATFORM_PRIORITY)
    p.chipset.update({"mch": mch, "ich9-lpc": lpc, "ich9-ahci": sata, "ich9-smbus": smbus,
                      "fw_cfg": p.fw_cfg})
    return p


def build(machine_type, *, lock=None, ram=None, board: Board | None = None) -> Platform:
    """The builder the registry names: pc or q35 by the type's name."""
    if machine_type is not None and machine_type.name == "q35":
        return build_q35(machine_type, lock=lock, ram=ram, board=board)
    return build_pc(machine_type, lock=lock, ram=ram, board=board)
