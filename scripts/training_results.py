"""Print the Markdown results tables for trained artifacts (docs/training-results.md).

    python scripts/training_results.py REGISTRY/volume/<version> ... [walk-forward.json ...]

Every number comes from the artifacts' report.json and metadata.json as written, and from
the JSON reports ``whalecast train --walk-forward`` writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import horizon_summary
from training.summary import results_tables, walk_forward_table


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs, walks = [], []
    for path in map(Path, argv):
        if path.is_file():
            walks.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        report = json.loads((path / "report.json").read_text(encoding="utf-8"))
        meta = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
        runs.append((report, meta))
    single = [(r, m) for r, m in runs if not horizon_summary.is_multi(r)]
    if single:
        print(results_tables(single))
    multi = [(r, m) for r, m in runs if horizon_summary.is_multi(r)]
    if multi:
        print(horizon_summary.tables(multi))
    for walk in walks:
        print(walk_forward_table(walk))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
