"""emu: a virtual-device emulator (vhost-pci, vhost-user, virtio-net) with a C data path."""
from setuptools import find_packages, setup

setup(
    name="emu",
    version="0.1.0",
    description="Virtual-device emulator: vhost-pci inter-VM networking, vhost-user, virtio-pci",
    packages=find_packages(include=["emu", "emu.*"]),
    package_data={"emu": ["_ring.c", "_ring.h", "_ring_packed.c", "_ring_packed.h",
                          "_ring_net.c", "_ring_net.h", "_efd.c",
                          "_ring_pingpong.c", "_ring_pingpong.h"]},
    python_requires=">=3.11",
    setup_requires=["cffi==2.0.0"],
    cffi_modules=["emu/_ring_build.py:ffibuilder"],
    install_requires=[
        "cffi==2.0.0",
        "numpy==2.4.6",
        "posix_ipc==1.3.2",
        "rich==15.0.0",
        "dpkt==1.9.8",
    ],
    extras_require={
        "test": [
            "pytest==8.4.2",
            "hypothesis==6.155.2",
            "pytest-timeout==2.4.0",
            "qemu.qmp==0.0.6",
            "scapy==2.8.0",
            "atheris==3.0.0",
            "matplotlib==3.11.2",
        ],
        "bench": [
            "matplotlib==3.11.2",
        ],
    },
    entry_points={
        # emu-system-x86_64: the name libqtest wants (it takes the target
        # architecture from the binary's name: QTEST_QEMU_BINARY=.../*-system-x86_64)
        "console_scripts": ["emu=emu.__main__:main", "emu-system-x86_64=emu.__main__:main"],
        # the plugin's name must be its module: tests/conftest.py names it too
        "pytest11": ["emu.testing.pytest_plugin = emu.testing.pytest_plugin"],
    },
)
