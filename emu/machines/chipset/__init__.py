"""The PC chipsets as configuration-space functions and platform devices,
one module per piece, each modelled on QEMU 7.2's device of the same name:

* pc (i440FX + PIIX): :mod:`.i440fx` (00:00.0 host bridge),
  :mod:`.piix3` (00:01.0 ISA bridge: PIRQ routing to ISA IRQs, the reset
  control register at 0xCF9), :mod:`.piix_ide` (00:01.1),
  :mod:`.piix4_pm` (00:01.3 ACPI power management: PM1 registers, PM
  timer, GPE0, APM, the SCI on IRQ 9, and the ACPI PCI hotplug block of
  :mod:`.acpi_pcihp` at 0xAE00);
* q35 (MCH + ICH9): :mod:`.mch` (00:00.0), :mod:`.ich9_lpc` (00:1F.0:
  PIRQ A-H to GSI 16-23 and the ISA IRQs, reset control),
  :mod:`.ich9_functions` (00:1F.2 SATA, 00:1F.3 SMBus);
* shared ACPI register blocks: :mod:`.acpi_regs`; the APM ports: :mod:`.apm`.

:mod:`emu.machines.x86` assembles them.
"""
