"""A short, bounded atheris run of each fuzz target (fuzz/targets.py), as CI runs it.

Longer runs: ``python -m fuzz.run <target> -max_total_time=600`` (see fuzz/README.md).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from fuzz.targets import TARGETS
from testkit.process import ROOT
from testkit.redis_servers import IN_CI

# Fuzz campaigns, run as processes: outside the fast tier.
pytestmark = pytest.mark.slow

RUNS = {"candles": 20_000, "whale": 10_000, "config": 2_000}


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


LARGE_PARENT = """
import subprocess, sys
ballast = bytearray(1536 * 1024 * 1024)
ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: a 1.5 GB parent
run = subprocess.run(sys.argv[1:])
sys.exit(run.returncode)
"""


def test_fuzz_run_from_a_large_parent_is_not_judged_by_its_memory(tmp_path: object) -> None:
    """Linux hands a child its parent's peak RSS across exec; libFuzzer would read 1.5 GB
    against a 1 GB limit and stop. The run must restart itself clean and finish."""
    command = [sys.executable, "-m", "fuzz.run", "config", "-runs=3000", "-rss_limit_mb=1024",
               "-timeout=10", "-seed=1"]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", LARGE_PARENT, *command],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "Done 3000 runs" in output and "out-of-memory" not in output
