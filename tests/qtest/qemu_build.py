"""Where scripts/build-qemu-tests.sh is, and how long its cold build may take."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "scripts", "build-qemu-tests.sh")
# a cold build (apt, download, configure, ninja) takes ~8 min on 2 cores; a test
# that uses the fixture first pays it, so its pytest-timeout covers it
BUILD_TIMEOUT = 3600
