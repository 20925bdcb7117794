#!/usr/bin/env bash
# Build the C ring engine with AddressSanitizer + UndefinedBehaviorSanitizer
# out of tree and run the ring tests against that build.
#
#   scripts/sanitize.sh [pytest args]     default: hostile, unit and property tests,
#                                         split and packed rings
#
# The in-tree build is not touched: the package is copied to a temporary
# directory, built there with EMU_RING_CFLAGS (emu/_ring_build.py honours
# it), and put first on the import path (python -P keeps the working
# directory off it).  Python itself is not instrumented, so libasan is
# preloaded; leak checking is off (CPython keeps memory until exit by
# design); PYTHONMALLOC=malloc routes cffi's allocations through malloc so
# ASan sees their bounds.  Guest memory is mmap'd, where ASan has no
# redzones: the tests' guard pages cover it.  pytest runs with -s so every
# report (forked test children included) reaches the log, which is then
# searched: the UBSan runtime next to a preloaded ASan ignores
# UBSAN_OPTIONS' log_path, so there is no report file to rely on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/emu-sanitize.XXXXXX")
trap 'rm -rf "$work"' EXIT

cp -r "$root/setup.py" "$root/pyproject.toml" "$root/emu" "$work/"
find "$work/emu" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
echo "sanitize: building emu._ring with ASan+UBSan in $work"
if ! (cd "$work" && EMU_RING_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1" \
        "$py" setup.py -q build_ext --inplace) >"$work/build.log" 2>&1; then
    cat "$work/build.log"
    exit 1
fi

libasan=$(gcc -print-file-name=libasan.so)
[ -e "$libasan" ] || { echo "sanitize: libasan not found ($libasan)"; exit 1; }
export LD_PRELOAD=$libasan
export ASAN_OPTIONS="detect_leaks=0"
export UBSAN_OPTIONS="print_stacktrace=1"
export PYTHONMALLOC=malloc
export PYTHONPATH=$work
export EMU_RING_EXPECT_DIR=$work/emu     # tests/ring/conftest.py checks the build in use

[ $# -gt 0 ] || set -- tests/ring/test_ring_hostile.py tests/ring/test_ring_unit.py \
                       tests/ring/test_ring_property.py tests/ring/test_ring_packed_hostile.py \
                       tests/ring/test_ring_packed_unit.py tests/ring/test_ring_packed_property.py
cd "$root"
status=0
"$py" -P -m pytest -q -s -p no:cacheprovider "$@" 2>&1 | tee "$work/pytest.log" || status=$?

if grep -E "runtime error:|ERROR: AddressSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer" \
        "$work/pytest.log" >"$work/reports.txt"; then
    echo "sanitize: FAILED, $(wc -l <"$work/reports.txt") sanitizer report line(s):"
    sort "$work/reports.txt" | uniq -c
    exit 1
fi
[ "$status" -eq 0 ] && echo "sanitize: clean (no ASan/UBSan report)"
exit "$status"
