"""emu: one process is one virtual machine whose devices are real models and
whose guest is a driver program.  See docs/architecture.md."""

__version__ = "0.1.0"
