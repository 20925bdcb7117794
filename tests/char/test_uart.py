"""The 16550A register file, as the PC16550D data sheet has it, through
the I/O space the guest reaches."""
from __future__ import annotations

from emu.address_space import AddressSpace, Region
from emu.char import uart as U
from emu.char.uart import Uart16550

BASE = 0x3F8


class Sink:
    """A chardev backend stand-in with a settable room."""

    def __init__(self, room: int = 1 << 16):
        self.data = bytearray()
        self.space = room

    def room(self) -> int:
        return self.space

    def write(self, data: bytes) -> int:
        n = min(len(data), self.space)
        self.data += data[:n]
        self.space -= n
        return n


def port(sink=None, irq=None):
    uart = Uart16550("serial0", sink or Sink(), irq=irq)
    io = AddressSpace("pio", 1 << 16, (1, 2, 4))
    io.set_layer("serial", [Region(BASE, BASE + U.UART_SIZE, uart)])
    return uart, io


def test_power_on_values_and_scratch():
    uart, io = port()
    assert io.read(BASE + U.LSR, 1) == U.LSR_THRE | U.LSR_TEMT
    assert io.read(BASE + U.IIR, 1) == U.IIR_NO_INT
    assert io.read(BASE + U.LCR, 1) == 0 and io.read(BASE + U.MCR, 1) == 0
    io.write(BASE + U.SCR, 1, 0x5A)
    assert io.read(BASE + U.SCR, 1) == 0x5A
    io.write(BASE + U.LSR, 1, 0)            # read-only: ignored
    assert io.read(BASE + U.LSR, 1) & U.LSR_THRE


def test_divisor_latch_shares_the_first_two_registers():
    uart, io = port()
    io.write(BASE + U.LCR, 1, U.LCR_DLAB | 0x03)
    io.write(BASE + U.DLL, 1, 0x01)
    io.write(BASE + U.DLM, 1, 0x02)
    assert (io.read(BASE + U.DLL, 1), io.read(BASE + U.DLM, 1)) == (0x01, 0x02)
    assert uart.divisor == 0x0201
    io.write(BASE + U.LCR, 1, 0x03)
    io.write(BASE + U.IER, 1, 0x0F)
    assert io.read(BASE + U.IER, 1) == 0x0F and uart.divisor == 0x0201
    assert uart.tx.data == b""              # writing DLL sent nothing


def test_transmit_goes_to_the_backend_and_thre_follows_its_room():
    sink = Sink(room=2)
    uart, io = port(sink)
    io.write(BASE + U.THR, 1, ord("h"))
    io.write(BASE + U.THR, 1, ord("i"))
    assert sink.data == b"hi"
    assert not io.read(BASE + U.LSR, 1) & U.LSR_THRE     # the peer has not read: busy
    io.write(BASE + U.THR, 1, ord("!"))                  # the driver ignored THRE: lost, counted
    assert sink.data == b"hi" and uart.tx_dropped == 1
    sink.space = 10
    uart.tx_room_changed()
    assert io.read(BASE + U.LSR, 1) & U.LSR_THRE


def test_receive_fifo_and_overrun():
    uart, io = port()
    assert uart.rx_room() == 1                  # character mode without FIFOs
    io.write(BASE + U.FCR, 1, U.FCR_ENABLE)
    assert uart.rx_room() == U.FIFO_SIZE
    assert io.read(BASE + U.IIR, 1) & U.IIR_FIFO_ENABLED == U.IIR_FIFO_ENABLED
    uart.receive(b"x" * 20)                     # more than the FIFO holds
    assert uart.overruns == 4
    lsr = io.read(BASE + U.LSR, 1)
    assert lsr & U.LSR_DR and lsr & U.LSR_OE
    assert not io.read(BASE + U.LSR, 1) & U.LSR_OE    # cleared by the read
    got = bytes(io.read(BASE + U.RBR, 1) for _ in range(16))
    assert got == b"x" * 16 and not io.read(BASE + U.LSR, 1) & U.LSR_DR
    uart.receive(b"ab")
    io.write(BASE + U.FCR, 1, U.FCR_ENABLE | U.FCR_CLEAR_RX)
    assert not io.read(BASE + U.LSR, 1) & U.LSR_DR


def test_interrupt_identification_in_priority_order():
    levels = []
    uart, io = port(irq=levels.append)
    io.write(BASE + U.FCR, 1, U.FCR_ENABLE)
    io.write(BASE + U.IER, 1, U.IER_THRI)
    assert levels == [True]
    assert io.read(BASE + U.IIR, 1) & 0x0F == U.IIR_THRI
    assert levels == [True, False]                              # reading IIR cleared it
    assert io.read(BASE + U.IIR, 1) & 0x0F == U.IIR_NO_INT
    io.write(BASE + U.IER, 1, U.IER_THRI | U.IER_RDI | U.IER_RLSI)
    uart.receive(b"z" * 17)                     # data, and an overrun
    assert io.read(BASE + U.IIR, 1) & 0x0F == U.IIR_RLSI       # line status first
    io.read(BASE + U.LSR, 1)
    assert io.read(BASE + U.IIR, 1) & 0x0F == U.IIR_RDI
    for _ in range(16):
        io.read(BASE + U.RBR, 1)
    assert io.read(BASE + U.IIR, 1) & 0x0F in (U.IIR_THRI, U.IIR_NO_INT)


def test_loopback_returns_output_and_modem_lines():
    sink = Sink()
    uart, io = port(sink)
    io.write(BASE + U.MCR, 1, U.MCR_LOOP | U.MCR_RTS | U.MCR_OUT2)
    io.write(BASE + U.THR, 1, 0x42)
    assert sink.data == b"" and io.read(BASE + U.RBR, 1) == 0x42
    msr = io.read(BASE + U.MSR, 1)
    assert msr & U.MSR_CTS and msr & U.MSR_DCD and not msr & U.MSR_DSR
    # outside, a backend holds CTS, DSR and DCD; in loop mode DSR follows DTR (0): a delta
    assert msr & U.MSR_DDSR and not msr & U.MSR_DCTS
    assert not io.read(BASE + U.MSR, 1) & U.MSR_DDSR            # cleared by the read
    assert uart.rx_room() == 0                  # the outside line is cut off in loop mode


def test_odd_accesses_do_not_break_the_model():
    uart, io = port()
    assert io.read(BASE + U.RBR, 1) == 0        # an empty FIFO reads 0
    assert io.read(BASE + 6, 2) >= 0            # a word access to MSR: low byte answers
    io.write(BASE + U.THR, 1, 0x1FF)            # a value wider than a byte
    assert uart.tx.data == b"\xff"
    uart.reset()
    assert io.read(BASE + U.LSR, 1) == U.LSR_THRE | U.LSR_TEMT
