"""Print the Markdown results tables for trained artifacts (docs/training-results.md).

    python scripts/training_results.py REGISTRY/volume/<version> REGISTRY/direction/<version> ...

Every number comes from the artifacts' report.json and metadata.json as written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.summary import results_tables


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs = []
    for directory in map(Path, argv):
        report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
        meta = json.loads((directory / "metadata.json").read_text(encoding="utf-8"))
        runs.append((report, meta))
    print(results_tables(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
