#!/usr/bin/env bash
# Longer fuzzing runs of emu's atheris targets (CI runs each for a bounded
# number of inputs: tests/fuzz/test_fuzz_bounded.py).
#
#   scripts/fuzz.sh [-t SECONDS] [-j] [TARGET ...]
#
# Targets: codec (decoder + Backend, tests/fuzz/fuzz_codec.py),
# frontend (Frontend reply handling), ring (C engine, plain build: guard
# pages catch any stray access), ring-packed (packed rings, both sides, and
# the one-copy burst between any two formats), pci (PCI/virtio registers),
# ring-asan / ring-packed-asan (the ring / ring-packed corpus replayed, then
# mutated, against an AddressSanitizer+UBSan build of the engine).
# Default: all, SECONDS (default 600) each.
#
# Corpora persist in $EMU_FUZZ_DIR (default ${TMPDIR:-/tmp}/emu-fuzz/<target>);
# crashes go to <target>/crashes/ and make the script exit 1.  A summary
# line per target gives the executed inputs ("execs") and the time; copy it
# into docs/security.md.  PYTHON selects the interpreter (default: .venv).
#
# ring-asan notes: atheris's coverage feedback does not survive a preloaded
# libasan (Python is not instrumented), so this stage replays the corpus the
# coverage-guided ring stage grew and mutates it blind.  No suppressions: the
# overlapping-copy bug it once found (an RX buffer aliasing a TX buffer) is
# fixed in the engine and kept as a regression input.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
secs=600
while getopts "t:" opt; do
    case $opt in
        t) secs=$OPTARG ;;
        *) sed -n '2,23p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- codec frontend ring ring-packed pci ring-asan ring-packed-asan
base=${EMU_FUZZ_DIR:-${TMPDIR:-/tmp}/emu-fuzz}
status=0

script_of() {
    case $1 in
        codec) echo "$root/tests/fuzz/fuzz_codec.py" ;;
        frontend|ring|pci) echo "$root/tests/fuzz/fuzz_$1.py" ;;
        ring-packed) echo "$root/tests/fuzz/fuzz_ring_packed.py" ;;
        ring-asan) echo "$root/tests/fuzz/fuzz_ring.py" ;;
        ring-packed-asan) echo "$root/tests/fuzz/fuzz_ring_packed.py" ;;
        *) echo "fuzz: unknown target $1" >&2; exit 2 ;;
    esac
}

asan_build() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/emu-fuzz-asan.XXXXXX")
    cp -r "$root/setup.py" "$root/pyproject.toml" "$root/emu" "$work/"
    find "$work/emu" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
    if ! (cd "$work" && EMU_RING_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1" \
            "$py" setup.py -q build_ext --inplace) >"$work/build.log" 2>&1; then
        cat "$work/build.log" >&2
        exit 1
    fi
    echo "$work"
}

for target in "$@"; do
    script=$(script_of "$target")
    corpus=$base/${target%-asan}
    crashes=$base/$target/crashes
    mkdir -p "$corpus" "$crashes"
    "$py" "$script" --seed-corpus "$corpus"
    log=$base/$target.log
    env=()
    pyflags=()
    if [ "${target%-asan}" != "$target" ]; then
        work=$(asan_build)
        # libstdc++ too: else ASan's __cxa_throw interceptor is unresolved when atheris exits
        env=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)"
             PYTHONMALLOC=malloc
             ASAN_OPTIONS="detect_leaks=0"
             UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" PYTHONPATH="$work")
        pyflags=(-P)
    fi
    echo "fuzz: $target for ${secs}s (corpus $corpus)"
    rc=0
    env "${env[@]}" "$py" "${pyflags[@]}" "$script" -max_total_time="$secs" -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" >"$log" 2>&1 || rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    took=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    found=$(find "$crashes" -type f | wc -l)
    if grep -qE "runtime error:|ERROR: AddressSanitizer" "$log"; then rc=1; fi
    echo "fuzz: $target: $execs execs, $took exec/s, ${secs}s, corpus $(ls "$corpus" | wc -l), crashes $found, exit $rc"
    if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
        status=1
        grep -A25 -E "Uncaught Python exception|ERROR: AddressSanitizer|runtime error:|deadly signal" "$log" | head -60
    fi
    [ "${target%-asan}" != "$target" ] && rm -rf "$work"
done
exit $status
