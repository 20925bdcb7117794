"""CI's bounded fuzzing: every atheris target for a fixed number of inputs
(a couple of minutes in all), every saved regression input replayed, and
the ring engine's corpus run against an AddressSanitizer+UBSan build.
Longer runs: scripts/fuzz.sh (figures in docs/security.md)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REGRESSIONS = os.path.join(HERE, "regressions")
TARGETS = {
    "codec": (os.path.join(HERE, "fuzz_codec.py"), 5000),
    "frontend": (os.path.join(HERE, "fuzz_frontend.py"), 20000),
    "ring": (os.path.join(HERE, "fuzz_ring.py"), 20000),
    "ring_packed": (os.path.join(HERE, "fuzz_ring_packed.py"), 20000),
    "pci": (os.path.join(HERE, "fuzz_pci.py"), 500),
}


def _load(name: str):
    path = TARGETS[name][0]
    spec = importlib.util.spec_from_file_location(f"fuzz_target_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _atheris(script: str, corpus: str, runs: int, env=None, pyflags=(), timeout=150):
    subprocess.run([sys.executable, script, "--seed-corpus", corpus], check=True, env=env)
    return subprocess.run([sys.executable, *pyflags, script, f"-atheris_runs={runs}",
                           "-max_len=4096", "-seed=1", f"-artifact_prefix={corpus}/", corpus],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_runs_clean_for_a_bounded_number_of_inputs(tmp_path, name):
    script, runs = TARGETS[name]
    run = _atheris(script, str(tmp_path / "corpus"), runs)
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"Done {runs}" in run.stderr, run.stderr[-2000:]


def regression_inputs():
    out = []
    for target in sorted(os.listdir(REGRESSIONS)) if os.path.isdir(REGRESSIONS) else []:
        for f in sorted(os.listdir(os.path.join(REGRESSIONS, target))):
            out.append(pytest.param(target, f, id=f"{target}/{f}"))
    return out


@pytest.mark.parametrize("target,name", regression_inputs())
def test_regression_input_replays_clean(target, name):
    """Every input that once crashed a target runs clean in-process."""
    mod = _load(target)
    with open(os.path.join(REGRESSIONS, target, name), "rb") as f:
        mod.run_one(f.read())


def _asan_build(tmp_path) -> dict:
    work = tmp_path / "asan"
    work.mkdir()
    for item in ("setup.py", "pyproject.toml"):
        shutil.copy(os.path.join(ROOT, item), work)
    shutil.copytree(os.path.join(ROOT, "emu"), work / "emu",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    flags = "-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1"
    env = dict(os.environ, EMU_RING_CFLAGS=flags)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=work,
                   env=env, check=True, capture_output=True)
    # libasan first (Python is not instrumented); libstdc++ too, or ASan's
    # __cxa_throw interceptor finds nothing when atheris throws at exit
    preload = " ".join(subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True,
                                      text=True, check=True).stdout.strip()
                       for lib in ("libasan.so", "libstdc++.so.6"))
    return dict(os.environ, LD_PRELOAD=preload, PYTHONMALLOC="malloc", PYTHONPATH=str(work),
                ASAN_OPTIONS="detect_leaks=0",
                UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")


REPORT = ("runtime error:", "ERROR: AddressSanitizer")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("target", ["ring", "ring_packed"])
def test_ring_engine_under_asan_and_ubsan(tmp_path, target):
    """The ring targets' seeds, their regressions and 5000 mutations against
    the sanitized engine: no report, no suppression."""
    env = _asan_build(tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    saved = os.path.join(REGRESSIONS, target)
    for f in os.listdir(saved) if os.path.isdir(saved) else []:
        shutil.copy(os.path.join(saved, f), corpus)
    run = _atheris(TARGETS[target][0], str(corpus), 5000, env=env, pyflags=("-P",))
    reports = [line for line in (run.stdout + run.stderr).splitlines()
               if any(r in line for r in REPORT)]
    assert not reports, "\n".join(reports[:20])
    assert run.returncode == 0 and "Done 5000" in run.stderr, run.stderr[-3000:]


@pytest.mark.timeout(120)
def test_rx_buffer_aliasing_a_tx_buffer_is_copied_safely(tmp_path):
    """Regression (found by fuzz_ring under ASan): a peer whose RX buffer
    overlaps one of its TX buffers made the engine memcpy overlapping ranges."""
    env = _asan_build(tmp_path)
    crash = os.path.join(REGRESSIONS, "ring", "rx-buffer-aliases-tx-buffer")
    run = subprocess.run([sys.executable, "-P", TARGETS["ring"][0], crash], env=env,
                         capture_output=True, text=True, timeout=100)
    assert run.returncode == 0 and "memcpy-param-overlap" not in run.stderr, run.stderr[-2000:]
