"""Character devices: the serial port (a 16550 UART, :mod:`~emu.char.uart`)
and the chardev backends its bytes go to (:mod:`~emu.char.backends`)."""
