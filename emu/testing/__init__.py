"""Helpers for testing emu against real peers and for harnesses (QEMU, DPDK launchers)."""
