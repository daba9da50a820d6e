"""``whalecast train`` for a preset the command line's ``--preset`` list does not offer.

    python scripts/train_preset.py -c CONFIG --preset NAME --candles CSV... [--whale CSV...]
        [--no-promote] [--walk-forward FOLDS --output JSON]

The same code path as ``whalecast train`` (:func:`training.commands.train_command`) with
the same output: the summary, then one JSON line per version written. It accepts every
preset of :data:`training.params.DEFAULTS`; scripts/training_runs.sh uses it for the
multi-horizon presets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.commands import train_command
from training.params import DEFAULTS
from whalecast.settings import load_settings

#: the ``whalecast train`` flags this script does not take, at their defaults
UNSET = ("batch_size", "epochs", "every", "fold_days", "job", "learning_rate", "name", "params",
         "registry", "seed", "set", "test_days", "train_days", "window", "without")  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", required=True, metavar="PATH")
    parser.add_argument("--preset", required=True, choices=list(DEFAULTS))
    parser.add_argument("--candles", nargs="+", metavar="CSV", required=True)
    parser.add_argument("--whale", nargs="+", metavar="CSV", default=[])
    parser.add_argument("--no-promote", action="store_true", dest="no_promote")
    parser.add_argument("--walk-forward", type=int, dest="walk_forward", metavar="FOLDS")
    parser.add_argument("--output", metavar="JSON")
    args = parser.parse_args(argv)
    for name in UNSET:
        setattr(args, name, None)
    args.force = args.progress = args.quick = args.list_presets = False
    return train_command(load_settings(args.config), args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
