"""The v1 feature list the daemon's windows hold, in column order.

The streamer computes these columns (one module, shared with training); a
model artifact names the subset it consumes, and the runtime slices them out of
the full window. This list must stay identical to the streamer's declaration.
"""

from __future__ import annotations

FEATURE_VERSION = 1

FEATURE_NAMES: tuple[str, ...] = (
    "ret_1", "ret_3", "ret_6", "ret_24",
    "range_rel", "body_rel", "upper_wick_rel", "lower_wick_rel",
    "vol_6", "vol_24",
    "log_volume", "volume_z_24", "volume_ratio_6_24", "log_dollar_volume",
    "rsi_14", "close_vs_sma_24", "atr_14_rel",
    "whale_inflow_log", "whale_outflow_log", "whale_inflow_sum_6", "whale_inflow_sum_24",
    "whale_outflow_max_3", "whale_count_12", "whale_netflow_6", "stable_inflow_6",
    "hour_sin", "hour_cos", "dow_sin", "dow_cos",
)  # fmt: skip
