"""Run one fuzz target under atheris (libFuzzer); always bounded.

    python -m fuzz.run whale -runs=200000 -max_len=4096 -rss_limit_mb=2048
    python -m fuzz.run config -max_total_time=600 fuzz/corpus/config

Arguments after the target name go to libFuzzer. Without ``-runs`` or
``-max_total_time`` the run stops after 10,000 inputs. Without a corpus directory
the seeds in ``fuzz/corpus/<target>`` are copied to a temporary one (the
repository's seeds are never written to). A broken property or an
exception other than the documented rejections is a crash: libFuzzer prints the
input and writes it to ``crash-<sha1>``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    # our parsers are imported (and instrumented for coverage feedback) through the targets
    from fuzz import targets


SEEDS = Path(__file__).resolve().parent / "corpus"


def main(argv: list[str]) -> None:
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
