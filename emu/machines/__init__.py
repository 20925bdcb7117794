"""Machine types: what ``-machine TYPE`` assembles.

:mod:`emu.machines.types` is the registry (names, descriptions, the
default; cheap to import: the command line reads it before anything is
built); each type's builder makes a :class:`emu.machines.platform.Platform`
-- the address spaces, the interrupt controller, the buses and the
platform devices every initiator (the guest program, a qtest client, a
device's DMA) reaches.
"""
