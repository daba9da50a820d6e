"""Training throughput of a preset (default: seed 004's ``direction-deep``) on this machine.

Sequences per second per epoch of ``model.fit`` on real windows from the shipped data
slice (24 x 29 v1 features, scaled on the training rows), for a few batch sizes. The first
epoch (graph tracing) is reported apart and left out of the steady-state figure.

    python -m benchmarks.bench_training                 # direction-deep, batch 32 / 128 / 256
    python -m benchmarks.bench_training --preset direction-gru --batch-sizes 32 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from training.dataset import TRAIN, build_samples, feature_index, fit_scaler, make_cuts, prepare
from training.dataset import windows as make_windows
from training.history import from_csv
from training.params import resolve
from training.presets import build

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
FILES = ["binance_BTC-USDT_1h.csv.gz", "binance_ETH-USDT_1h.csv.gz", "binance_SOL-USDT_1h.csv.gz"]


def real_windows(n: int) -> tuple[np.ndarray, np.ndarray]:
    histories = from_csv(
        [DATA / f for f in FILES], [DATA / "whalealert_BTC_exchange_flows_1h.csv.gz"]
    )
    data = prepare(histories)
    cuts = make_cuts(data, test_days=30, validation_fraction=0.1, train_days=None, purge_bars=24)
    train = build_samples(data, 24, cuts).of(TRAIN)
    columns = feature_index(resolve("direction-deep")["features"])
    scaler = fit_scaler(data, train, columns, 24)
    x = make_windows(data, train, columns, 24, scaler)[:n]
    return x, train.y_up[:n]


def measure(preset: str, x: np.ndarray, y: np.ndarray, batch: int, epochs: int) -> dict[str, float]:
    keras.utils.set_random_seed(0)
    params = resolve(preset)
    model = build(preset, params, x.shape[1], x.shape[2])
    times = []
    for _ in range(epochs + 1):
        started = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)
        times.append(time.perf_counter() - started)
    steady = np.asarray(times[1:])
    return {
        "batch_size": batch,
        "params": int(model.count_params()),
        "first_epoch_seconds": round(times[0], 2),
        "epoch_seconds_median": round(float(np.median(steady)), 2),
        "sequences_per_second_median": round(len(x) / float(np.median(steady)), 1),
        "sequences_per_second_min": round(len(x) / float(steady.max()), 1),
        "sequences_per_second_max": round(len(x) / float(steady.min()), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="direction-deep")
    parser.add_argument("--sequences", type=int, default=8192)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the first")
    args = parser.parse_args()
    x, y = real_windows(args.sequences)
    print(f"# {args.preset}: {len(x)} real sequences of {x.shape[1]} x {x.shape[2]}, "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}, Keras {keras.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    rows = []
    for batch in args.batch_sizes:
        row = measure(args.preset, x, y, batch, args.epochs)
        rows.append(row)
        print(f"batch {batch:>4}: {row['sequences_per_second_median']:>8.1f} seq/s median "
              f"({row['sequences_per_second_min']:.1f}-{row['sequences_per_second_max']:.1f}), "
              f"epoch {row['epoch_seconds_median']} s, first epoch {row['first_epoch_seconds']} s",
              flush=True)  # fmt: skip
    print(json.dumps({"preset": args.preset, "machine": platform.machine(),
                      "cpus": os.cpu_count(), "results": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
