"""A 16550A UART at an ISA I/O base: the serial console.

Why a 16550 and not a simpler console port: it is what ``-serial`` and
``-device isa-serial`` give a PC in QEMU, what a harness's console
expects to sit behind (``QEMUMachine.set_console()`` passes ``-serial
chardev:console``), and its register file is small enough to model
exactly; emu's guest program drives it as a kernel's early console does
(program.py, through the bus: port writes, LSR polls).

Registers (offsets from the base; DLAB is LCR bit 7), as in the National
Semiconductor PC16550D data sheet::

    0  RBR (read) / THR (write)         DLL with DLAB=1
    1  IER                              DLM with DLAB=1
    2  IIR (read) / FCR (write)
    3  LCR    4  MCR    5  LSR (read only)    6  MSR (read only)    7  SCR

The model is sans I/O: transmitted bytes go to ``tx`` (the chardev
backend, which says how much room it has: that is THRE/TEMT, so a peer
that does not read holds the guest back instead of making emu buffer
without bound), received bytes come in through :meth:`receive`, at most
the receive FIFO's room (:meth:`rx_room`; 16 bytes with FIFOs enabled, 1
without, as the data sheet's character mode).  Every access holds the
machine lock the bus holds.  The interrupt output is computed (IIR) and
reported to ``irq`` on change; emu's guest polls, so nothing waits on it.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Protocol

from emu import trace

UART_SIZE = 8
FIFO_SIZE = 16

# register offsets
RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

LCR_DLAB = 0x80
IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
FCR_ENABLE, FCR_CLEAR_RX, FCR_CLEAR_TX = 0x01, 0x02, 0x04
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI = 0x01, 0x00, 0x02, 0x04, 0x06
IIR_FIFO_ENABLED = 0xC0
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
LSR_DR, LSR_OE, LSR_BI, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x10, 0x20, 0x40
MSR_DCTS, MSR_DDSR, MSR_TERI, MSR_DDCD = 0x01, 0x02, 0x04, 0x08
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80

_read_ev = trace.event("serial_read")
_write_ev = trace.event("serial_write")


class TxSink(Protocol):
    def room(self) -> int: ...                  # bytes it takes now without dropping
    def write(self, data: bytes) -> int: ...    # bytes taken (thread-safe)


class NullSink:
    """A port whose output goes nowhere (``-serial null``)."""

    def room(self) -> int:
        return 1 << 20

    def write(self, data: bytes) -> int:
        return len(data)


class Uart16550:
    def __init__(self, name: str, tx: TxSink | None = None, *, lock: threading.RLock | None = None,
                 irq: Callable[[bool], None] | None = None,
                 rx_room_changed: Callable[[], None] | None = None):
        self.name = name
        self.tx: TxSink = tx or NullSink()
        self.lock = lock if lock is not None else threading.RLock()
        self.irq = irq
        self.rx_room_changed = rx_room_changed     # the backend may read more
        self.rx: deque[int] = deque()
        self.tx_bytes = 0
        self.tx_dropped = 0          # bytes written while THRE was clear (the driver's fault)
        self.rx_bytes = 0
        self.overruns = 0
        self._irq_level = False
        self.reset()

    def reset(self) -> None:
        """Power-on values (the data sheet's reset column)."""
        with self.lock:
            self.ier = 0
            self.lcr = 0
            self.mcr = 0
            self.lsr_errors = 0       # OE/BI latched until LSR is read
            self.msr_deltas = 0
            self.scr = 0
            self.divisor = 12         # 9600 baud from 1.8432 MHz, as QEMU
            self.fcr = 0
            self.thr_ipending = False
            self.rx.clear()
            self._update_irq()

    # -- what the guest reaches ------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        with self.lock:
            value = self._read(offset & 7)
            if _read_ev.on:
                _read_ev(offset & 7, value)
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            value &= 0xFF
            if _write_ev.on:
                _write_ev(offset & 7, value)
            self._write(offset & 7, value)

    def _read(self, reg: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if reg == RBR:
            if dlab:
                return self.divisor & 0xFF
            value = self.rx.popleft() if self.rx else 0
            self._update_irq()
            if self.rx_room_changed is not None and not self.loopback:
                self.rx_room_changed()
            return value
        if reg == IER:
            return (self.divisor >> 8) & 0xFF if dlab else self.ier
        if reg == IIR:
            iir = self._iir()
            if iir == IIR_THRI:
                self.thr_ipending = False       # reading IIR clears the THRE interrupt
                self._update_irq()
            return iir | (IIR_FIFO_ENABLED if self.fcr & FCR_ENABLE else 0)
        if reg == LCR:
            return self.lcr
        if reg == MCR:
            return self.mcr
        if reg == LSR:
            value = self._lsr()
            self.lsr_errors = 0
            self._update_irq()
            return value
        if reg == MSR:
            value = self._msr()
            self.msr_deltas = 0
            self._update_irq()
            return value
        return self.scr

    def _write(self, reg: int, value: int) -> None:
        dlab = self.lcr & LCR_DLAB
        if reg == THR:
            if dlab:
                self.divisor = (self.divisor & 0xFF00) | value
            elif self.loopback:
                self._push_rx(bytes([value]))
            else:
                if self.tx.room() > 0 and self.tx.write(bytes([value])) == 1:
                    self.tx_bytes += 1
                else:
                    self.tx_dropped += 1
                self.thr_ipending = True
                self._update_irq()
        elif reg == IER:
            if dlab:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
            else:
                self.ier = value & 0x0F
                # enabling THRI with an empty holding register raises it at once
                self.thr_ipending = bool(self.ier & IER_THRI) and self._thre()
                self._update_irq()
        elif reg == FCR:
            if value & FCR_CLEAR_RX:
                self.rx.clear()
            self.fcr = value & 0xC9
            self._update_irq()
        elif reg == LCR:
            self.lcr = value
        elif reg == MCR:
            was = self._msr_lines()
            self.mcr = value & 0x1F
            self._msr_changed(was)
        elif reg == SCR:
            self.scr = value
        # LSR and MSR are read-only: writes are ignored, as on the part

    # -- state ------------------------------------------------------------------------
    @property
    def loopback(self) -> bool:
        return bool(self.mcr & MCR_LOOP)

    def _fifo_depth(self) -> int:
        return FIFO_SIZE if self.fcr & FCR_ENABLE else 1

    def _thre(self) -> bool:
        return self.loopback or self.tx.room() > 0

    def _lsr(self) -> int:
        lsr = self.lsr_errors
        if self.rx:
            lsr |= LSR_DR
        if self._thre():
            lsr |= LSR_THRE | LSR_TEMT
        return lsr

    def _msr_lines(self) -> int:
        if self.loopback:   # the modem outputs come back on the inputs
            m = self.mcr
            return ((MSR_CTS if m & MCR_RTS else 0) | (MSR_DSR if m & MCR_DTR else 0)
                    | (MSR_RI if m & MCR_OUT1 else 0) | (MSR_DCD if m & MCR_OUT2 else 0))
        return MSR_CTS | MSR_DSR | MSR_DCD      # a backend is always "connected", as QEMU's

    def _msr_changed(self, was: int) -> None:
        now = self._msr_lines()
        for line, delta in ((MSR_CTS, MSR_DCTS), (MSR_DSR, MSR_DDSR), (MSR_DCD, MSR_DDCD)):
            if (was ^ now) & line:
                self.msr_deltas |= delta
        if was & MSR_RI and not now & MSR_RI:
            self.msr_deltas |= MSR_TERI           # trailing edge of RI
        self._update_irq()

    def _msr(self) -> int:
        return self._msr_lines() | self.msr_deltas

    def _iir(self) -> int:
        if self.ier & IER_RLSI and self.lsr_errors:
            return IIR_RLSI
        if self.ier & IER_RDI and self.rx:
            return IIR_RDI
        if self.ier & IER_THRI and self.thr_ipending and self._thre():
            return IIR_THRI
        if self.ier & IER_MSI and self.msr_deltas:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        level = self._iir() != IIR_NO_INT
        if level != self._irq_level:
            self._irq_level = level
            if self.irq is not None:
                self.irq(level)

    # -- what the chardev backend calls -------------------------------------------------------
    def rx_room(self) -> int:
        """Bytes :meth:`receive` takes now (QEMU's ``can_receive``)."""
        with self.lock:
            return 0 if self.loopback else max(0, self._fifo_depth() - len(self.rx))

    def receive(self, data: bytes) -> None:
        """Bytes from the peer; beyond the FIFO's room they overrun (LSR.OE)."""
        with self.lock:
            if not self.loopback:
                self._push_rx(data)

    def _push_rx(self, data: bytes) -> None:
        room = self._fifo_depth() - len(self.rx)
        self.rx.extend(data[:max(room, 0)])
        self.rx_bytes += min(len(data), max(room, 0))
        if len(data) > room:
            self.overruns += len(data) - max(room, 0)
            self.lsr_errors |= LSR_OE
        self._update_irq()

    def tx_room_changed(self) -> None:
        """The backend has room again: THRE may rise (and its interrupt)."""
        with self.lock:
            self._update_irq()

    def stats(self) -> dict:
        return {"tx_bytes": self.tx_bytes, "tx_dropped": self.tx_dropped,
                "rx_bytes": self.rx_bytes, "overruns": self.overruns}
