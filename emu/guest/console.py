"""The guest's serial console: a polled 16550 driver, as a kernel's early
console is.

The guest program finds COM1 (0x3f8) as firmware does -- the scratch
register keeps a value, LSR does not float high -- programs 115200 8N1
with FIFOs on, and writes each line byte by byte: wait for THRE (LSR bit
5), store into THR.  A transmitter that stays busy (the chardev's peer
does not read) makes the driver give up on the rest of that line after a
bounded number of polls, counted in ``dropped``: a stuck console never
stalls the guest.  Input lines are read the same way, polled from the
guest's main loop.

Everything goes through the bus (``pio_read``/``pio_write``), so a
console line costs one port write per byte under the machine lock: the
console is for boot and state messages, never for per-packet output.
"""
from __future__ import annotations

from emu.char import uart as U

COM1 = 0x3F8
#: LSR polls before a byte is given up (~ a few ms through the bus)
THRE_POLLS = 2000
MAX_LINE = 256


class SerialConsole:
    def __init__(self, bus, base: int = COM1):
        self.bus = bus
        self.base = base
        self.lines = 0
        self.dropped = 0
        self._rx = bytearray()

    @classmethod
    def probe(cls, bus, base: int = COM1) -> "SerialConsole | None":
        """The UART at *base*, initialised; None if there is none."""
        try:
            for pattern in (0x5A, 0xA5):
                bus.pio_write(base + U.SCR, 1, pattern)
                if bus.pio_read(base + U.SCR, 1) != pattern:
                    return None
            if bus.pio_read(base + U.LSR, 1) == 0xFF:     # nothing decodes the port
                return None
        except Exception:
            return None
        con = cls(bus, base)
        con.init()
        return con

    def init(self) -> None:
        w = self._out
        w(U.IER, 0)                          # polled: no interrupts
        w(U.LCR, U.LCR_DLAB)
        w(U.DLL, 1)                          # 115200 baud
        w(U.DLM, 0)
        w(U.LCR, 0x03)                       # 8 data bits, no parity, 1 stop bit
        w(U.FCR, U.FCR_ENABLE | U.FCR_CLEAR_RX | U.FCR_CLEAR_TX)
        w(U.MCR, U.MCR_DTR | U.MCR_RTS | U.MCR_OUT2)

    def _out(self, reg: int, value: int) -> None:
        self.bus.pio_write(self.base + reg, 1, value)

    def _in(self, reg: int) -> int:
        return self.bus.pio_read(self.base + reg, 1)

    def write_line(self, text: str) -> bool:
        """One console line (``\\r\\n`` ended, as a tty sends it); False
        if the transmitter stayed busy and the line was cut."""
        data = text.encode("utf-8", "replace")[:MAX_LINE] + b"\r\n"
        for i, byte in enumerate(data):
            for _ in range(THRE_POLLS):
                if self._in(U.LSR) & U.LSR_THRE:
                    break
            else:
                self.dropped += len(data) - i
                return False
            self._out(U.THR, byte)
        self.lines += 1
        return True

    def read_lines(self) -> list[str]:
        """Complete input lines received so far (without their ends)."""
        out = []
        for _ in range(4096):                # bounded: a flood cannot hold the guest
            if not self._in(U.LSR) & U.LSR_DR:
                break
            ch = self._in(U.RBR)
            if ch in (0x0D, 0x0A):
                if self._rx:
                    out.append(self._rx.decode("utf-8", "replace"))
                    self._rx.clear()
            elif len(self._rx) < MAX_LINE:
                self._rx.append(ch)
        return out
