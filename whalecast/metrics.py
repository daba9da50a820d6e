"""Every Prometheus metric whalecast exports, declared in one place.

One :class:`Metrics` object is built in ``main`` with its own
``CollectorRegistry`` and passed down to the streamer and the daemon; tests
build their own. Names use base units (``_seconds``, ``_total``, ``_ratio``),
histograms have explicit buckets, and no metric carries a per-symbol label
(series counts run to thousands): labels are exchange, feed, timeframe, model
and bounded reason/outcome enums. The deploy/ alert rules and the Grafana
dashboard use these names; a test checks each one exists in a real scrape.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from whalecast import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)  # fmt: skip
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
#: Whale Alert's delay, block time to receipt: seconds (Ethereum) to an hour (a slow block).
DELAY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

#: Bounded label values for rejected feed input (``reason`` label).
REJECT_REASONS = (
    "malformed", "unknown_symbol", "non_finite", "non_positive", "high_below_low",
    "price_outside_range", "off_grid", "from_future", "too_old", "duplicate",
    "out_of_order", "oversized", "unknown_type", "bad_amount", "late", "below_min_value",
    "unused_asset",
)  # fmt: skip


class Metrics:
    """The metric families, registered on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.build_info = Info("whalecast_build", "Version of the running whalecast.", registry=r)
        self.build_info.info({"version": __version__})

        # feeds
        self.feed_messages = Counter("whalecast_feed_messages_total", "Messages received from a feed.", ["exchange", "feed"], registry=r)  # fmt: skip
        self.feed_rejected = Counter("whalecast_feed_rejected_total", "Feed messages or records rejected at the boundary, by reason.", ["feed", "reason"], registry=r)  # fmt: skip
        self.feed_reconnects = Counter("whalecast_feed_reconnects_total", "Feed reconnections, by cause (error, stale, lifetime, recreate).", ["exchange", "feed", "cause"], registry=r)  # fmt: skip
        self.feed_connected = Gauge("whalecast_feed_connected", "Open feed connections.", ["exchange", "feed"], registry=r)  # fmt: skip
        self.feed_last_message = Gauge("whalecast_feed_last_message_timestamp_seconds", "Wall time of the last message received on a feed.", ["exchange", "feed"], registry=r)  # fmt: skip
        self.clock_skew = Gauge("whalecast_clock_skew_seconds", "Exchange server time minus local time, measured at start-up.", ["exchange"], registry=r)  # fmt: skip
        self._whale(r)

        # bars and backfill
        self.bars_closed = Counter("whalecast_bars_closed_total", "Closed bars accepted, by how the close was detected (ws_flag, next_bar, rest).", ["exchange", "timeframe", "source"], registry=r)  # fmt: skip
        self.backfill_bars = Counter("whalecast_backfill_bars_total", "Closed bars recovered over REST.", ["exchange", "timeframe"], registry=r)  # fmt: skip
        self.backfill_requests = Counter("whalecast_backfill_requests_total", "REST backfill requests, by outcome (ok, error, rate_limited).", ["exchange", "outcome"], registry=r)  # fmt: skip
        self.gaps = Counter("whalecast_gaps_detected_total", "Gaps found between stored and arriving bars.", ["exchange", "timeframe"], registry=r)  # fmt: skip
        self.bars_missing = Counter("whalecast_bars_missing_total", "Closed bars the exchange never served (REST showed later ones): skipped as holes.", ["exchange", "timeframe"], registry=r)  # fmt: skip

        # store
        self.store_seconds = Histogram("whalecast_store_seconds", "Redis window-store operations, per bar (all series at once).", ["operation"], buckets=FAST_BUCKETS, registry=r)  # fmt: skip
        self.store_restored = Counter("whalecast_store_restored_series_total", "Series whose keys Redis had lost (restart without persistence) rewritten from the daemon's memory.", registry=r)  # fmt: skip
        self.redis_errors = Counter("whalecast_redis_errors_total", "Redis commands that failed, by operation.", ["operation"], registry=r)  # fmt: skip

        # the bar loop
        self.bar_latency = Histogram("whalecast_bar_latency_seconds", "Wall time from a bar's last closed candle in to all its predictions published.", ["timeframe"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.inference_seconds = Histogram("whalecast_inference_seconds", "One batched forward pass of one model.", ["model"], buckets=FAST_BUCKETS, registry=r)  # fmt: skip
        self.batch_size = Histogram("whalecast_inference_batch_size", "Series in one batched forward pass.", ["model"], buckets=BATCH_BUCKETS, registry=r)  # fmt: skip
        self.forward_rows = Counter("whalecast_inference_series_total", "Series predicted, by path: step (one row from the state primed between bars) or window (the full window).", ["model", "path"], registry=r)  # fmt: skip
        self.early_passes = Counter("whalecast_inference_early_passes_total", "Forward passes started while Redis stored the bar, by outcome: used, or discarded (the stored windows, series or models differed) and run again.", ["outcome"], registry=r)  # fmt: skip
        self.prime_seconds = Histogram("whalecast_inference_prime_seconds", "Priming one model's recurrent states between bars (off the bar's critical path).", ["model"], buckets=FAST_BUCKETS, registry=r)  # fmt: skip
        self.predictions = Counter("whalecast_predictions_published_total", "Predictions published.", ["model"], registry=r)  # fmt: skip
        self.predictions_dropped = Counter("whalecast_predictions_dropped_total", "Predictions not published, by reason (non_finite).", ["model", "reason"], registry=r)  # fmt: skip
        self.not_ready = Counter("whalecast_series_not_ready_total", "Series skipped at a bar because their window was incomplete.", ["timeframe"], registry=r)  # fmt: skip
        self.late_series = Counter("whalecast_series_late_total", "Series whose bar arrived after the grace period (predicted in a late batch).", ["timeframe"], registry=r)  # fmt: skip
        self.series_ready = Gauge("whalecast_series_ready", "Series with a complete window.", ["timeframe"], registry=r)  # fmt: skip
        self.series_owned = Gauge("whalecast_series_owned", "Series this replica owns (its shard).", registry=r)  # fmt: skip
        self.last_publish = Gauge("whalecast_last_publish_timestamp_seconds", "Wall time predictions were last published (the daemon's start until its first publish, so a daemon that never publishes goes stale too).", ["timeframe"], registry=r)  # fmt: skip
        self.history_bars = Counter("whalecast_bars_history_total", "Bars stored without a prediction because they closed before the daemon started (start-up backfill).", ["timeframe"], registry=r)  # fmt: skip
        self.bars_caught_up = Counter("whalecast_bars_caught_up_total", "Bars that closed before this replica started, predicted because no replica had published them (takeover of a shard, restart).", ["timeframe"], registry=r)  # fmt: skip
        self.bars_unpredicted = Counter("whalecast_bars_unpredicted_total", "Stored bars no replica published and whose windows are gone (found at start-up).", ["timeframe"], registry=r)  # fmt: skip
        self.bars_processed = Counter("whalecast_bars_processed_total", "Bar closes handled by the bar loop.", ["timeframe"], registry=r)  # fmt: skip
        self.loop_tasks = Gauge("whalecast_event_loop_tasks", "asyncio tasks alive in the daemon's event loop (flat unless tasks leak).", registry=r)  # fmt: skip
        self.loop_lag = Histogram("whalecast_event_loop_lag_seconds", "How late the event loop runs a timer it was asked to run.", buckets=LAG_BUCKETS, registry=r)  # fmt: skip

        # models
        self.model_info = Gauge("whalecast_model_info", "The model version in service (value 1).", ["model", "version", "backend"], registry=r)  # fmt: skip
        self.model_loaded = Gauge("whalecast_model_loaded_timestamp_seconds", "When the serving version was loaded.", ["model"], registry=r)  # fmt: skip
        self.model_trained = Gauge("whalecast_model_trained_timestamp_seconds", "When the serving version was trained.", ["model"], registry=r)  # fmt: skip
        self.model_expired = Gauge("whalecast_model_expired", "1 when the serving version is older than inference.expiry_hours.", ["model"], registry=r)  # fmt: skip
        self.model_reloads = Counter("whalecast_model_reloads_total", "Model load attempts, by outcome (loaded, refused).", ["model", "outcome"], registry=r)  # fmt: skip
        self.model_reload_failing = Gauge("whalecast_model_reload_failing", "1 while the newest published version was refused.", ["model"], registry=r)  # fmt: skip

        self._live(r)

    def _live(self, r: CollectorRegistry) -> None:
        """Live scoring: v1 outputs per model; horizon outputs per model, horizon (bars) and
        quantile."""
        self.live_scored = Counter("whalecast_live_scored_total", "Predictions scored against their outcome bar.", ["model"], registry=r)  # fmt: skip
        self.live_accuracy = Gauge("whalecast_live_accuracy_ratio", "Direction hit rate over the last scoring_window scored predictions.", ["model"], registry=r)  # fmt: skip
        self.live_mae = Gauge("whalecast_live_log_volume_mae", "Mean absolute error of log volume over the last scoring_window scored predictions.", ["model"], registry=r)  # fmt: skip
        self.live_pinball = Gauge("whalecast_live_log_volume_pinball", "Pinball loss of log1p volume summed over the horizon, for a quantile output, over the last scoring_window scored predictions.", ["model", "horizon", "quantile"], registry=r)  # fmt: skip
        self.live_coverage = Gauge("whalecast_live_quantile_coverage_ratio", "Share of outcomes at or below the predicted volume quantile (about the quantile when calibrated), over the last scoring_window scored predictions.", ["model", "horizon", "quantile"], registry=r)  # fmt: skip
        self.live_horizon_mae = Gauge("whalecast_live_horizon_log_volume_mae", "Mean absolute error of log1p volume summed over the horizon, for a point output, over the last scoring_window scored predictions.", ["model", "horizon"], registry=r)  # fmt: skip
        self.live_brier = Gauge("whalecast_live_direction_brier", "Brier score of the probability that the close horizon bars ahead is above, over the last scoring_window scored predictions.", ["model", "horizon"], registry=r)  # fmt: skip
        self.live_horizon_hits = Gauge("whalecast_live_direction_hit_ratio", "Direction hit rate horizon bars ahead, over the last scoring_window scored predictions.", ["model", "horizon"], registry=r)  # fmt: skip

    def _whale(self, r: CollectorRegistry) -> None:
        self.whale_transfers = Counter("whalecast_whale_transfers_total", "Whale transfers that reached a bar's aggregates, by flow.", ["flow"], registry=r)  # fmt: skip
        self.whale_delay = Histogram("whalecast_whale_delay_seconds", "Whale alerts' delay: knowledge time (receipt, exchange clock) minus block time.", buckets=DELAY_BUCKETS, registry=r)  # fmt: skip

    def initialise(
        self, timeframes: Iterable[str], models: Iterable[str], started_s: float
    ) -> None:
        """Create the label sets of the bar loop and the models a daemon will use, so that
        every family shows (at zero) from the first scrape, before its first event. The last
        publish time starts at ``started_s``: the no-predictions alert then also fires for a
        daemon that has not published once since it started."""
        for timeframe in timeframes:
            self.last_publish.labels(timeframe).set(started_s)
            for family in (self.bar_latency, self.not_ready, self.late_series, self.series_ready,
                           self.history_bars, self.bars_processed):  # fmt: skip
                family.labels(timeframe)
        for model in models:
            for family in (self.inference_seconds, self.batch_size, self.predictions,
                           self.model_reload_failing, self.live_scored,
                           self.prime_seconds):  # fmt: skip
                family.labels(model)
            for path in ("step", "window"):
                self.forward_rows.labels(model, path)
            self.predictions_dropped.labels(model, "non_finite")
            for outcome in ("loaded", "refused"):
                self.model_reloads.labels(model, outcome)
        self.redis_errors.labels("publish")
        for outcome in ("used", "discarded"):
            self.early_passes.labels(outcome)

    def render(self) -> bytes:
        """The exposition text, as ``/metrics`` serves it."""
        return generate_latest(self.registry)
