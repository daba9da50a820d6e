#!/usr/bin/env bash
# The training runs behind docs/training-results.md ("Models worth serving" and "Several
# horizons and volume quantiles"), then its tables.
#
#   scripts/training_runs.sh DATA_DIR REGISTRY [CONFIG]
#   RUNS=horizons scripts/training_runs.sh DATA_DIR REGISTRY [CONFIG]
#
# RUNS=horizons trains only the multi-horizon presets (their section of the page).
# DATA_DIR holds the Binance 1h candle files of BTC, ETH, SOL and XRP and the Whale Alert
# hourly flows of BTC and ETH (the names below); REGISTRY is where the versions go (a fresh
# directory: the ablations are scored against the full model in service there). CONFIG
# (default: the settings the page states) is passed to every run. Every run's stdout is kept
# in REGISTRY/runs/*.log; the tables are rendered from the versions' report.json and
# metadata.json by scripts/training_results.py and printed at the end.
set -euo pipefail

data=${1:?usage: $0 DATA_DIR REGISTRY [CONFIG]}
registry=${2:?usage: $0 DATA_DIR REGISTRY [CONFIG]}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
mkdir -p "$registry/runs"
config=${3:-$registry/runs/train.yml}
if [ -z "${3:-}" ]; then
    cat >"$config" <<EOF
inference: {registry: $registry}
training: {test_days: 365, validation_fraction: 0.2, bootstrap_samples: 1000}
EOF
fi

candles=()
for s in BTC ETH SOL XRP; do candles+=("$data/binance_${s}-USDT_1h.csv"); done
whale=()  # the flow files present (no preset of the horizons section reads whale columns)
for s in BTC ETH; do
    flows="$data/whalealert_telegram_${s}_exchange_flows_1h.csv"
    if [ -f "$flows" ]; then whale+=("$flows"); fi
done
written=()

train() {  # train NAME ARGS...: one run; the versions it wrote are rendered at the end
    local name=$1
    shift
    "$python" -m whalecast train -c "$config" --candles "${candles[@]}" \
        ${whale[@]:+--whale "${whale[@]}"} "$@" >"$registry/runs/$name.log"
    while read -r directory; do written+=("$directory"); done < <(
        grep '^{"model"' "$registry/runs/$name.log" | "$python" -c \
            'import json, sys; [print(json.loads(line)["directory"]) for line in sys.stdin]')
}

render() {
    "$python" "$here/scripts/training_results.py" "$@"
}

horizons() {  # the multi-horizon presets, then volume-horizons walked forward (4 refits)
    for preset in volume-horizons direction-horizons; do
        started=$(date +%s)
        train "$preset" --preset "$preset"
        echo "$preset: $(($(date +%s) - started)) s of wall time" >>"$registry/runs/wall-times.txt"
    done
    horizons_walk="$registry/runs/walk-forward-volume-horizons.json"
    "$python" -m whalecast train -c "$config" --candles "${candles[@]}" \
        ${whale[@]:+--whale "${whale[@]}"} --preset volume-horizons --walk-forward 4 \
        --output "$horizons_walk" >"$registry/runs/walk-forward-horizons.log"
}

if [ "${RUNS:-all}" = horizons ]; then
    horizons
    render "${written[@]}" "$horizons_walk"
    cat "$registry/runs/wall-times.txt"
    exit 0
fi

train volume-wide --preset volume-wide
train direction-wide --preset direction-wide
# each scored against the volume-wide version in service (the ablation table needs one: when
# the network lost, it is the baseline version, or there is none and the rows stay plain)
for group in memory calendar activity; do
    train "volume-wide-without-$group" --preset volume-wide --without "$group" --no-promote
done
walk="$registry/runs/walk-forward-volume-wide.json"  # refits in 4 windows, promotes nothing
"$python" -m whalecast train -c "$config" --candles "${candles[@]}" ${whale[@]:+--whale "${whale[@]}"} \
    --preset volume-wide --walk-forward 4 --output "$walk" >"$registry/runs/walk-forward.log"
horizons
render "${written[@]}" "$walk" "$horizons_walk"
