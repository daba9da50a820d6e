"""A short, bounded atheris run of each fuzz target (fuzz/targets.py), as CI runs it.

Longer runs: ``python -m fuzz.run <target> -max_total_time=600`` (see fuzz/README.md).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from fuzz.targets import TARGETS
from tests.helpers import IN_CI
from tests.process_helpers import ROOT

RUNS = {"candles": 3000, "whale": 3000, "config": 1500}


@pytest.fixture(scope="module", autouse=True)
def atheris_installed() -> None:
    if importlib.util.find_spec("atheris") is None:
        message = "atheris is not installed (pip install -e '.[dev]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_bounded_fuzz_run_finds_nothing(target: str, tmp_path: object) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "fuzz.run", target, f"-runs={RUNS[target]}", "-max_len=2048",
         "-rss_limit_mb=1024", "-timeout=10", "-seed=1"],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert f"Done {RUNS[target]} runs" in output
