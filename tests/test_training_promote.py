"""Promotion end to end: worse models are refused, a better one goes into service and is
announced on a real Redis; an unreachable Redis does not undo a promotion on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
import structlog

from testkit.redis_servers import free_port
from tests.training_helpers import histories_fixture, settings_fixture  # noqa: F401 - fixtures
from training.history import SeriesHistory
from training.jobs import make_job
from training.train import run
from whalecast.artifact import read_current
from whalecast.keys import Keys
from whalecast.settings import RedisSettings, Settings

pytestmark = [pytest.mark.tf, pytest.mark.redis, pytest.mark.training]

CRIPPLED = {"units": 2, "epochs": 1, "learning_rate": 1e-6}  # predicts about the mean
DECENT = {"units": 16, "epochs": 4, "batch_size": 64, "learning_rate": 3e-3}


def with_redis(settings: Settings, url: str, against_baseline: bool = True) -> Settings:
    training = settings.training.model_copy(update={"promote_against_baseline": against_baseline})
    redis_settings = RedisSettings(url=url, socket_timeout_seconds=1.0)
    return settings.model_copy(update={"redis": redis_settings, "training": training})


def test_worse_than_the_baseline_is_refused(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory], redis_url: str
) -> None:
    s = with_redis(settings, redis_url)
    outcome = run(s, make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, plots=False),
                  histories)  # fmt: skip
    assert not outcome.decision.promote
    assert "not better than ridge" in outcome.decision.reason
    assert read_current(tmp_path, "volume") is None
    assert outcome.directory.is_dir()  # the artifact is kept for inspection, just not served
    report = json.loads((outcome.directory / "report.json").read_text())
    assert report["promotion"]["promote"] is False


def test_better_model_is_promoted_and_announced_worse_one_refused(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory], redis_url: str
) -> None:
    s = with_redis(settings, redis_url, against_baseline=False)
    bad = run(s, make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, force=True,
                          plots=False), histories)  # fmt: skip
    assert read_current(tmp_path, "volume") == bad.version

    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.subscribe(Keys(s.redis.prefix).models_channel)
    assert listener.get_message(timeout=2)["type"] == "subscribe"

    good = run(s, make_job(s, "volume", registry=tmp_path, extra=DECENT, plots=False), histories)
    assert good.decision.promote and not good.decision.forced
    assert good.decision.serving_version == bad.version
    assert good.decision.new < good.decision.serving  # MAE: lower is better
    assert read_current(tmp_path, "volume") == good.version
    assert good.published
    message = listener.get_message(timeout=5)
    assert message is not None and message["type"] == "message"
    assert json.loads(message["data"]) == {"model": "volume", "version": good.version}
    # the serving version was re-scored on the same test samples, beside the baselines
    pooled = good.report["test"]["pooled"]
    assert "serving" in pooled["models"] and "serving" in pooled["paired"]

    worse = run(s, make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, plots=False),
                histories)  # fmt: skip
    assert not worse.decision.promote
    assert f"not better than serving {good.version}" in worse.decision.reason
    assert read_current(tmp_path, "volume") == good.version
    assert listener.get_message(timeout=0.5) is None  # nothing announced
    listener.close()


def test_promotion_stands_on_disk_when_redis_is_down(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    s = with_redis(settings, f"redis://127.0.0.1:{free_port()}/0")
    with structlog.testing.capture_logs() as logs:
        outcome = run(s, make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, force=True,
                                  plots=False), histories)  # fmt: skip
    assert read_current(tmp_path, "volume") == outcome.version
    assert not outcome.published
    warning = [e for e in logs if e["event"] == "model_notice_not_published"]
    assert warning and warning[0]["log_level"] == "warning"


def test_point_estimate_alone_does_not_promote() -> None:
    from training.promote import decide

    loose = decide("auc", 0.533, ("logistic", 0.527), None, verdicts={"logistic": "no difference"})
    assert not loose.promote and "not significantly better than logistic" in loose.reason
    assert not loose.beats_baseline
    sure = decide("auc", 0.533, ("logistic", 0.527), None, verdicts={"logistic": "better"})
    assert sure.promote and sure.beats_baseline
    ungated = decide("auc", 0.52, ("logistic", 0.527), None, against_baseline=False)
    assert ungated.promote and not ungated.beats_baseline  # what the fallback asks
    serving = decide(
        "mae",
        0.30,
        ("ridge", 0.40),
        ("v1", 0.31),
        verdicts={"ridge": "better", "serving": "no difference"},
    )
    assert not serving.promote and "serving v1" in serving.reason
