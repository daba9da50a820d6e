"""The daemon's status in Redis: what the web page shows about models and feeds.

The page (``whalecast ui``) reads only Redis, so each daemon writes what it knows
and no other process can see: its models in service and its feeds. Every
``metrics.status_seconds`` it sets one JSON string, ``<prefix>:replica:<id>``
(``Keys.replica``), with a TTL of three periods, so a replica that dies drops off
the page by itself; a graceful stop deletes it at once. The numbers are the ones
``/metrics`` exports (read from the same registry), plus each model's held-out
score against its baseline from the artifact's ``report.json``. Example::

    {"replica": "node-1:4242", "shard": [0, 1], "series": 3, "started_ms": 1767225600000,
     "updated_ms": 1767229200042, "bars_processed": 12, "last_publish_ms": 1767229200040,
     "models": [{"model": "direction", "version": "20261122T060000Z-3f2a",
                 "backend": "tf-function", "target": "p_up_next_bar",
                 "trained_at": "2026-11-22T06:00:00+00:00", "loaded_ms": 1767225600100,
                 "reload_failing": false, "reloads_refused": 0, "last_refusal": null,
                 "live_scored": 30, "live_accuracy": 0.53, "live_mae": null,
                 "heldout": {"metric": "auc", "value": 0.52, "baseline": "logistic",
                             "baseline_value": 0.51, "reason": "better than ..."}}],
     "feeds": [{"exchange": "binance", "feed": "candles", "connected": 1,
                "last_message_ms": 1767229200001, "messages": 512, "reconnects": 0,
                "bars_missing": 0}]}

:func:`status_document` is pure (metric samples and runtimes in, a dict out);
:class:`StatusPublisher` is the thin loop that writes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from whalecast.artifact import REPORT_FILE, ArtifactError, read_json, version_dir
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)

Labels = Mapping[str, str]
#: sample name -> [(labels, value)], as the registry exports them
Samples = Mapping[str, list[tuple[Labels, float]]]


def replica_id() -> str:
    """This process among all replicas: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def read_samples(metrics: Metrics) -> dict[str, list[tuple[Labels, float]]]:
    out: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
    for family in metrics.registry.collect():
        for sample in family.samples:
            out[sample.name].append((sample.labels, float(sample.value)))
    return out


def _by(samples: Samples, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
    """Sum of ``name``'s samples per value of ``label_names``."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in samples.get(name, []):
        out[tuple(labels.get(n, "") for n in label_names)] += value
    return out


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds else None


def heldout_score(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The promotion metric of the model and of its baseline on the held-out test period."""
    promotion = (report or {}).get("promotion")
    if not isinstance(promotion, Mapping):
        return None
    return {
        "metric": promotion.get("metric"),
        "value": promotion.get("new"),
        "baseline": promotion.get("baseline_name"),
        "baseline_value": promotion.get("baseline"),
        "reason": promotion.get("reason"),
    }


@dataclass(frozen=True)
class ServedModel:
    """What the status needs of one model in service (from ``ModelRuntime``)."""

    model: str
    version: str
    backend: str
    target: str
    trained_at: str
    loaded_s: float
    report: Mapping[str, Any] | None


def model_rows(
    served: Iterable[ServedModel], samples: Samples, refusals: Mapping[str, tuple[str, str]]
) -> list[dict[str, Any]]:
    refused = _by(samples, "whalecast_model_reloads_total", "model", "outcome")
    failing = _by(samples, "whalecast_model_reload_failing", "model")
    scored = _by(samples, "whalecast_live_scored_total", "model")
    accuracy = _by(samples, "whalecast_live_accuracy_ratio", "model")
    mae = _by(samples, "whalecast_live_log_volume_mae", "model")
    rows = []
    for m in served:
        key = (m.model,)
        refusal = refusals.get(m.model)
        rows.append({
            "model": m.model, "version": m.version, "backend": m.backend, "target": m.target,
            "trained_at": m.trained_at, "loaded_ms": _ms(m.loaded_s),
            "reload_failing": bool(failing.get(key)),
            "reloads_refused": int(refused.get((m.model, "refused"), 0)),
            "last_refusal": {"version": refusal[0], "reason": refusal[1]} if refusal else None,
            "live_scored": int(scored.get(key, 0)),
            "live_accuracy": accuracy.get(key), "live_mae": mae.get(key),
            "heldout": heldout_score(m.report),
        })  # fmt: skip
    return rows


def feed_rows(samples: Samples) -> list[dict[str, Any]]:
    connected = _by(samples, "whalecast_feed_connected", "exchange", "feed")
    last = _by(samples, "whalecast_feed_last_message_timestamp_seconds", "exchange", "feed")
    messages = _by(samples, "whalecast_feed_messages_total", "exchange", "feed")
    reconnects = _by(samples, "whalecast_feed_reconnects_total", "exchange", "feed")
    missing = _by(samples, "whalecast_bars_missing_total", "exchange")
    feeds = sorted(set(connected) | set(last) | set(messages) | set(reconnects))
    return [
        {
            "exchange": exchange,
            "feed": feed,
            "connected": int(connected.get((exchange, feed), 0)),
            "last_message_ms": _ms(last.get((exchange, feed))),
            "messages": int(messages.get((exchange, feed), 0)),
            "reconnects": int(reconnects.get((exchange, feed), 0)),
            "bars_missing": int(missing.get((exchange,), 0)) if feed == "candles" else None,
        }
        for exchange, feed in feeds
    ]


def status_document(
    *,
    replica: str,
    shard: tuple[int, int],
    started_s: float,
    now_s: float,
    samples: Samples,
    served: Iterable[ServedModel],
    refusals: Mapping[str, tuple[str, str]],
) -> dict[str, Any]:
    publish = _by(samples, "whalecast_last_publish_timestamp_seconds")
    return {
        "replica": replica,
        "shard": list(shard),
        "series": int(sum(_by(samples, "whalecast_series_owned").values())),
        "started_ms": _ms(started_s),
        "updated_ms": _ms(now_s),
        "bars_processed": int(sum(_by(samples, "whalecast_bars_processed_total").values())),
        "last_publish_ms": _ms(max(publish.values(), default=0.0)),
        "models": model_rows(served, samples, refusals),
        "feeds": feed_rows(samples),
    }


class ReportCache:
    """``report.json`` of each served version, read once per version (None if absent)."""

    def __init__(self, registry: Path) -> None:
        self.registry = registry
        self._reports: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    def get(self, model: str, version: str) -> Mapping[str, Any] | None:
        key = (model, version)
        if key not in self._reports:
            try:
                self._reports[key] = read_json(
                    version_dir(self.registry, model, version) / REPORT_FILE
                )
            except ArtifactError:
                self._reports[key] = None
        return self._reports[key]


class StatusPublisher:
    """Writes this daemon's status every ``period`` seconds until cancelled."""

    def __init__(self, daemon: Any, period: float, replica: str | None = None) -> None:
        self.daemon = daemon
        self.period = period
        self.replica = replica or replica_id()
        self.key = Keys(daemon.settings.redis.prefix).replica(self.replica)
        self.started_s = time.time()
        self.reports = ReportCache(daemon.models.registry)

    def document(self) -> dict[str, Any]:
        d = self.daemon
        served = [
            ServedModel(
                r.model,
                r.version,
                r.backend_name,
                r.target,
                r.trained_at.isoformat(),
                r.loaded_at,
                self.reports.get(r.model, r.version),
            )
            for r in d.models.serving().values()
        ]
        shard = d.settings.shard
        return status_document(
            replica=self.replica, shard=(shard.index, shard.count), started_s=self.started_s,
            now_s=time.time(), samples=read_samples(d.metrics), served=served,
            refusals=d.models.last_refusal,
        )  # fmt: skip

    async def publish_once(self) -> None:
        text = json.dumps(self.document(), separators=(",", ":"), allow_nan=False)
        await self.daemon.redis.set(self.key, text, px=int(self.period * 3000))

    async def run(self) -> None:
        while True:
            try:
                await self.publish_once()
            except (RedisError, OSError, ValueError) as e:  # loop boundary: the next period retries
                log.warning("status not published", key=self.key, error=repr(e))
            await asyncio.sleep(self.period)

    async def remove(self) -> None:
        """On a graceful stop: off the page at once rather than when the TTL runs out."""
        try:  # bounded: a Redis that is gone must not hold up the shutdown
            await asyncio.wait_for(self.daemon.redis.delete(self.key), timeout=1.0)
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("status not removed", key=self.key, error=repr(e))
