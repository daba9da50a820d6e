"""/readyz's rules without I/O: each check, since when, known-unable series, failing feeds."""

from __future__ import annotations

from inference.readiness import ModelFacts, ReadinessTracker
from streamer.link import FeedFacts, LinkStatus, combined
from whalecast.domain import Series

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SERIES = [Series("binance", s, "1h") for s in ("BTC/USDT", "ETH/USDT", "NEW/USDT")]
BOTH = ModelFacts(("direction", "volume"), {"direction": "v1", "volume": "v2"}, "/models")
UP = FeedFacts("binance", True, T0)


def test_ready_only_when_every_window_model_and_feed_is_in() -> None:
    tracker = ReadinessTracker(SERIES, T0)
    report = tracker.evaluate(T0 + 5, [True, False, False], [True, False, False], BOTH, [UP])
    assert not report.ready
    assert report.body["missing"] == ["windows"]
    assert report.body["since"] == {"windows": "2026-01-01T00:00:00+00:00"}
    assert report.body["windows"] == {
        "series": 3, "complete": 1, "waiting": 2,
        "waiting_series": ["binance:ETH/USDT:1h", "binance:NEW/USDT:1h"],
        "unable": 0, "unable_series": [],
    }  # fmt: skip
    report = tracker.evaluate(T0 + 9, [True, True, True], [True, True, True], BOTH, [UP])
    assert report.ready and report.body["missing"] == [] and report.body["since"] == {}
    assert report.body["feeds"] == [
        {"feed": "binance", "connected": True, "since": "2026-01-01T00:00:00+00:00"}
    ]


def test_a_series_with_all_its_bars_in_and_no_full_window_is_named_not_waited_for() -> None:
    tracker = ReadinessTracker(SERIES, T0)
    report = tracker.evaluate(T0 + 60, [True, True, False], [True, True, True], BOTH, [UP])
    assert report.ready
    assert report.body["windows"]["unable_series"] == [
        {"series": "binance:NEW/USDT:1h", "since": "2026-01-01T00:01:00+00:00",
         "reason": "every bar the exchange has is in, fewer than the window needs"}
    ]  # fmt: skip
    # the next bar closes and is not stored yet: still known unable, no flapping
    report = tracker.evaluate(T0 + 3600, [True, True, False], [False, False, False], BOTH, [UP])
    assert report.ready and report.body["windows"]["unable"] == 1
    # its window completes: it counts as complete, no longer as unable
    report = tracker.evaluate(T0 + 7200, [True, True, True], [True, True, True], BOTH, [UP])
    assert report.ready and report.body["windows"]["unable"] == 0


def test_missing_models_are_named_with_the_registry() -> None:
    tracker = ReadinessTracker(SERIES[:1], T0)
    none = ModelFacts(("direction", "volume"), {}, "/srv/models")
    report = tracker.evaluate(T0 + 1, [True], [True], none, [UP])
    assert not report.ready and report.body["missing"] == ["models"]
    assert report.body["models"] == {
        "configured": ["direction", "volume"], "serving": {},
        "missing": ["direction", "volume"], "registry": "/srv/models",
    }  # fmt: skip
    assert report.body["since"] == {"models": "2026-01-01T00:00:00+00:00"}


def test_a_failing_feed_says_since_when_and_what_was_tried() -> None:
    link = LinkStatus(T0, "load markets and server time from http://127.0.0.1:1/api/v3")
    for attempt in range(3):
        link.failed("ExchangeNotAvailable('refused')", T0 + attempt)
    tracker = ReadinessTracker(SERIES[:1], T0)
    report = tracker.evaluate(T0 + 42, [False], [False], BOTH, [link.facts("binance")])
    assert report.body["missing"] == ["feeds", "windows"]
    assert report.body["feeds"] == [{
        "feed": "binance", "connected": False, "since": "2026-01-01T00:00:00+00:00",
        "down_seconds": 42.0, "attempts": 3,
        "last_tried": "load markets and server time from http://127.0.0.1:1/api/v3",
        "last_error": "ExchangeNotAvailable('refused')",
    }]  # fmt: skip
    link.succeeded(T0 + 50)
    assert link.facts("binance") == FeedFacts("binance", True, T0 + 50, 0, link.last_tried,
                                              "ExchangeNotAvailable('refused')")  # fmt: skip


def test_a_feed_of_several_connections_is_up_only_when_all_are() -> None:
    first, second = LinkStatus(T0, "a"), LinkStatus(T0, "b")
    first.succeeded(T0 + 1)
    second.succeeded(T0 + 2)
    assert combined("binance", [first, second]) == FeedFacts("binance", True, T0 + 2)
    second.failed("stale", T0 + 10)
    first.failed("error", T0 + 20)
    assert combined("binance", [first, second]).last_error == "stale"  # down the longest
