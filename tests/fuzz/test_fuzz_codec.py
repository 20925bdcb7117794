"""The fuzz target runs, both directly (seeds and seeded random mutations)
and under atheris for a bounded number of inputs."""
from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _load():
    spec = importlib.util.spec_from_file_location("fuzz_codec", os.path.join(HERE, "fuzz_codec.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seeds_and_mutations(no_fd_leak):
    fuzz = _load()
    rng = random.Random(1234)
    seeds = fuzz.seed_corpus()
    for blob in seeds:
        fuzz.run_one(blob)
    for _ in range(400):
        blob = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(blob))
            blob[i] = rng.randrange(256)
        fuzz.run_one(bytes(blob))


@pytest.mark.timeout(120)
def test_atheris_bounded_run(tmp_path):
    corpus = tmp_path / "corpus"
    script = os.path.join(HERE, "fuzz_codec.py")
    subprocess.run([sys.executable, script, "--seed-corpus", str(corpus)], check=True)
    run = subprocess.run([sys.executable, script, "-atheris_runs=5000", str(corpus)],
                         capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 5000" in run.stderr
