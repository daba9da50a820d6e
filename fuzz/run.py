"""Run one fuzz target under atheris (libFuzzer); always bounded.

    python -m fuzz.run whale -runs=200000 -max_len=4096 -rss_limit_mb=2048
    python -m fuzz.run config -max_total_time=600 fuzz/corpus/config

Arguments after the target name go to libFuzzer. Without ``-runs`` or
``-max_total_time`` the run stops after 10,000 inputs. Without a corpus directory
the seeds in ``fuzz/corpus/<target>`` are copied to a temporary one (the
repository's seeds are never written to). A broken property or an
exception other than the documented rejections is a crash: libFuzzer prints the
input and writes it to ``crash-<sha1>``.

libFuzzer's ``-rss_limit_mb`` reads the process's peak RSS, and Linux carries that peak
across ``exec`` from the process that started it: a run launched by a large process (a
test runner holding TensorFlow) would be judged by its parent's memory and stopped as
out-of-memory at once. A run that finds itself with such an inherited peak restarts
itself once, from its own small process, before fuzzing.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import atheris

SEEDS = Path(__file__).resolve().parent / "corpus"
RESTARTED = "WHALECAST_FUZZ_RESTARTED"
#: peak RSS above the current RSS by more than this is someone else's memory
INHERITED_PEAK_KB = 256 * 1024


def inherited_peak_kb() -> int:
    """How far this process's recorded peak RSS exceeds its current RSS, in KiB."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/statm", encoding="ascii") as statm:
        resident_pages = int(statm.read().split()[1])
    return peak_kb - resident_pages * resource.getpagesize() // 1024


def restart_clean(argv: list[str]) -> None:
    """Re-run this command as a child of this (small) process when the peak was inherited."""
    if os.environ.get(RESTARTED) or inherited_peak_kb() < INHERITED_PEAK_KB:
        return
    env = {**os.environ, RESTARTED: "1"}
    child = subprocess.run([sys.executable, "-m", "fuzz.run", *argv[1:]], check=False, env=env)
    sys.exit(child.returncode)


def instrumented_targets() -> ModuleType:
    """Import the targets with only our own code instrumented for coverage feedback
    (instrumenting numpy, pydantic and the rest would take a minute and guide nothing)."""
    with atheris.instrument_imports(include=["fuzz", "streamer", "whalecast"]):
        from fuzz import targets  # noqa: PLC0415 - imported under instrumentation, after restart
    return targets


def main(argv: list[str]) -> None:
    restart_clean(argv)
    targets = instrumented_targets()
    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        sys.exit(f"usage: python -m fuzz.run {{{','.join(targets.TARGETS)}}} [libFuzzer flags]")
    flags = argv[2:]
    if not any(f.startswith(("-runs=", "-max_total_time=")) for f in flags):
        flags.append("-runs=10000")
    if all(f.startswith("-") for f in flags):
        corpus = Path(tempfile.mkdtemp(prefix=f"wc-fuzz-{argv[1]}-"))
        for seed in (SEEDS / argv[1]).glob("*"):
            shutil.copy(seed, corpus)
        flags.append(str(corpus))
    atheris.Setup([argv[0], *flags], targets.TARGETS[argv[1]])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
