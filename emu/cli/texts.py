"""The texts emu prints instead of running: -version, -help, -device help."""
from __future__ import annotations

from emu import __version__
from emu.cli.schemas import DEVICE_ALIASES, DEVICES
from emu.guest.registry import APP_NAMES, DRIVERS

QEMU_VERSION_TEXT = "7.2.0"         # the QEMU release emu's interfaces mirror


def version_text() -> str:
    """First line for people, second for harnesses that parse QEMU's."""
    return (f"emu version {__version__}\n"
            f"QEMU emulator version {QEMU_VERSION_TEXT} (emu {__version__})")


def device_help() -> str:
    lines = ["Network devices:"]
    for name, (_, desc) in DEVICES.items():
        alias = next((a for a, t in DEVICE_ALIASES.items() if t == name), None)
        lines.append(f'name "{name}", bus PCI' + (f', alias "{alias}"' if alias else "") + f', desc "{desc}"')
    return "\n".join(lines)


def cpu_help() -> str:
    """``-cpu help`` in QEMU's format; emu runs no CPU model, so every
    name is accepted and the list only shows the usual ones."""
    return "Available CPUs:\n" + "\n".join(f"x86 {name:<20}  {desc}" for name, desc in (
        ("host", "accepted: emu emulates devices, not CPUs (any -cpu has no effect)"),
        ("max", "accepted, no effect"),
        ("qemu64", "accepted, no effect (QEMU's default)")))


def vga_help() -> str:
    return f"{'none':<20} no graphic card (emu has no display; any other -vga is ignored)"


def display_help() -> str:
    return "Available display backend types:\nnone"


def usage() -> str:
    return f"""{version_text()}
usage: emu [options]

emu is one virtual machine: guest RAM, a PCI bus with virtio-net-pci and
vhost-pci-net devices, a QMP monitor, and a guest driver program.

Machine:
-name NAME | guest=NAME          the VM's name (query-name)
-m [size=]SIZE                   guest RAM (default 128M; unit M if none)
-numa node,memdev=ID, -mem-path DIR, -mem-prealloc   as in QEMU (one node)
-machine TYPE[,memory-backend=ID] q35 (default), pc, or none
-object memory-backend-shm|memfd|file,id=ID,size=SIZE[,share=on][,mem-path=PATH]
-object filter-dump,id=ID,netdev=ID,file=PCAP[,maxlen=N]
-smp N, -accel NAME, -enable-kvm, -cpu X   accepted, no effect
Devices:
-chardev socket,id=ID,path=PATH|fd=N[,server=on|off][,wait=off][,reconnect=SECONDS]
-netdev vhost-user,id=ID,chardev=ID[,queues=N][,vhost-pci=auto|seed|off]
-netdev socket,id=ID,fd=N|listen=[HOST]:PORT|connect=HOST:PORT   emu moves the frames
-netdev hubport,id=ID,hubid=N    frames between the NICs of hub N
-device virtio-net-pci,netdev=ID[,mac=MAC][,mrg_rxbuf=on|off][,mq=on|off][,packed=on|off][,vectors=N]
        [,addr=SLOT.FN][,disable-legacy=on|off|auto][,disable-modern=on|off]...
-device vhost-pci-net,chardev=ID[,mac=MAC][,window=SIZE][,queues=N][,packed=on|off]...
-device help | -device DRIVER,help   list device models / their properties
Guest:
-guest {'|'.join(DRIVERS)},app={'|'.join(APP_NAMES)}[,key=value...]
-guest help | -guest DRIVER,app=APP,help   list drivers and apps / their keys
Monitor:
-qmp unix:PATH[,server=on|off][,wait=off] | -qmp stdio | -qmp-pretty ...
-chardev socket,id=mon,fd=N -mon chardev=mon,mode=control[,pretty=on]
Process:
-S                               start paused (prelaunch); 'cont' starts
-daemonize, -pidfile FILE, -no-shutdown, -no-reboot
-D FILE, -d ITEM[,...] (-d help), -trace [enable=]PATTERN[,file=FILE] (-trace help)
-display none, -nographic, -nodefaults, -no-user-config, -serial none, -vga none
-version, -help"""
