"""Kernel records, key layout, prediction schema and the artifact registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whalecast.artifact import (
    ArtifactError,
    OutputSpec,
    Preprocess,
    Scaler,
    list_versions,
    load_preprocess,
    read_current,
    set_current,
    write_artifact,
    write_json,
)
from whalecast.domain import Candle, Flow, Series, classify_flow, timeframe_ms
from whalecast.keys import Keys, latest_field
from whalecast.schema import SCHEMA_ID, TARGETS, Prediction, encode_prediction
from whalecast.targets import DIRECTION, DIRECTION_AT, MEANING, VOLUME, VOLUME_SUM, Target


def test_timeframes() -> None:
    assert timeframe_ms("1m") == 60_000
    assert timeframe_ms("5m") == 300_000
    assert timeframe_ms("1h") == 3_600_000
    assert timeframe_ms("1d") == 86_400_000
    for bad in ("", "0h", "1y", "h1", "1.5h"):
        with pytest.raises(ValueError):
            timeframe_ms(bad)


def test_candle_problems() -> None:
    good = Candle("binance", "BTC/USDT", "1h", 1_767_225_600_000, 10, 12, 9, 11, 5)
    assert good.problem() is None
    assert good.close_ms == 1_767_229_200_000
    cases = {
        "non_finite": dict(close=float("nan")),
        "non_positive": dict(volume=-1.0),
        "high_below_low": dict(high=8.0, low=9.0, open=8.5, close=8.5),
        "price_outside_range": dict(close=13.0),
        "off_grid": dict(open_ms=1_767_225_600_001),
    }
    from dataclasses import replace

    for reason, change in cases.items():
        assert replace(good, **change).problem() == reason


def test_flow_classification() -> None:
    assert classify_flow("unknown", "exchange") is Flow.INFLOW
    assert classify_flow("exchange", "unknown") is Flow.OUTFLOW
    assert classify_flow("exchange", "exchange") is Flow.INTERNAL
    assert classify_flow("unknown", "unknown") is Flow.OTHER


def test_keys_share_one_hash_tag() -> None:
    keys = Keys("wc")
    series = Series("binance", "BTC/USDT", "1h")
    assert keys.bars(series) == "wc:{binance:BTC/USDT:1h}:bars"
    assert keys.window(series).startswith("wc:{binance:BTC/USDT:1h}:")
    assert keys.predicted(series) == "wc:{binance:BTC/USDT:1h}:predicted"
    assert keys.predictions_channel == "wc:predictions"
    assert keys.predictions_stream == "wc:predictions:stream"
    assert keys.latest("direction") == "wc:latest:direction"
    assert Series.from_tag(series.tag) == series
    assert latest_field(series.tag, VOLUME, None, None) == "binance:BTC/USDT:1h"
    assert latest_field(series.tag, DIRECTION_AT, 6, None) == "binance:BTC/USDT:1h|p_up_in_bars|6"
    assert (
        latest_field(series.tag, VOLUME_SUM, 24, 0.9)
        == "binance:BTC/USDT:1h|volume_next_bars|24|0.9"
    )


def test_prediction_roundtrip() -> None:
    raw = encode_prediction(
        exchange="binance", symbol="BTC/USDT", timeframe="1h", bar_open_ms=1, bar_close_ms=2,
        model="direction", model_version="20261122T060000Z-3f2a", target="p_up_next_bar",
        value=0.54, published_ms=3, latency_ms=4.5,
    )  # fmt: skip
    message = Prediction.parse(raw)
    assert json.loads(raw)["schema"] == "whalecast.prediction/v1"
    assert message.value == 0.54
    with pytest.raises(ValueError):
        encode_prediction(
            exchange="b", symbol="s", timeframe="1h", bar_open_ms=1, bar_close_ms=2, model="m",
            model_version="v", target="p_up_next_bar", value=float("nan"), published_ms=3,
            latency_ms=1,
        )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=12),
    number=st.floats(allow_nan=False, allow_infinity=False, width=64),
    ms=st.integers(min_value=0, max_value=2**62),
)
def test_prediction_encoding_is_exactly_json_dumps(text: str, number: float, ms: int) -> None:
    fields: dict[str, Any] = {
        "exchange": text, "symbol": f"{text}/USDT", "timeframe": "1h", "bar_open_ms": ms,
        "bar_close_ms": ms + 1, "model": text + '"', "model_version": "v\\" + text,
        "target": "p_up_next_bar", "value": number, "published_ms": ms, "latency_ms": abs(number),
    }  # fmt: skip
    expected = {"schema": SCHEMA_ID, **fields}
    expected["value"] = round(number, 8)
    expected["latency_ms"] = round(abs(number), 3)
    assert encode_prediction(**fields) == json.dumps(expected, separators=(",", ":"))


_V1_FIELDS: dict[str, Any] = {
    "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h",
    "bar_open_ms": 1767225600000, "bar_close_ms": 1767229200000, "model": "direction",
    "model_version": "20261122T060000Z-3f2a", "target": "p_up_next_bar", "value": 0.5431,
    "published_ms": 1767229200042, "latency_ms": 42.0,
}  # fmt: skip


def test_v1_message_is_byte_for_byte_unchanged() -> None:
    """The bytes a v1 consumer received before horizons existed, written out literally."""
    before = (
        '{"schema":"whalecast.prediction/v1","exchange":"binance","symbol":"BTC/USDT",'
        '"timeframe":"1h","bar_open_ms":1767225600000,"bar_close_ms":1767229200000,'
        '"model":"direction","model_version":"20261122T060000Z-3f2a",'
        '"target":"p_up_next_bar","value":0.5431,"published_ms":1767229200042,'
        '"latency_ms":42.0}'
    )
    assert encode_prediction(**_V1_FIELDS) == before
    assert encode_prediction(**_V1_FIELDS, horizon_bars=None, quantile=None) == before
    parsed = Prediction.parse(before)
    assert parsed.horizon_bars is None and parsed.quantile is None
    assert parsed.model_dump(by_alias=True, exclude_none=True) == json.loads(before)


def test_horizon_message_has_its_fields_after_target() -> None:
    raw = encode_prediction(
        **{**_V1_FIELDS, "target": VOLUME_SUM, "value": 18342.5}, horizon_bars=6, quantile=0.9
    )
    keys = list(json.loads(raw))
    assert keys[keys.index("target") :][:4] == ["target", "horizon_bars", "quantile", "value"]
    message = Prediction.parse(raw)
    assert (message.target, message.horizon_bars, message.quantile) == (VOLUME_SUM, 6, 0.9)
    direction = encode_prediction(**{**_V1_FIELDS, "target": DIRECTION_AT}, horizon_bars=6)
    assert '"target":"p_up_in_bars","horizon_bars":6,"value":' in direction
    assert Prediction.parse(direction).quantile is None
    with pytest.raises(ValueError):
        Prediction.parse(raw.replace('"quantile":0.9', '"quantile":1.5'))


@settings(max_examples=200, deadline=None)
@given(
    horizon=st.one_of(st.none(), st.integers(min_value=1, max_value=10_000)),
    quantile=st.one_of(st.none(), st.floats(min_value=0.001, max_value=0.999)),
    number=st.floats(allow_nan=False, allow_infinity=False, width=64),
)
def test_horizon_encoding_is_exactly_json_dumps(
    horizon: int | None, quantile: float | None, number: float
) -> None:
    fields = {**_V1_FIELDS, "target": VOLUME_SUM, "value": number}
    expected: dict[str, Any] = {"schema": SCHEMA_ID}
    for name, value in fields.items():
        expected[name] = value
        if name == "target" and horizon is not None:
            expected["horizon_bars"] = horizon
        if name == "target" and quantile is not None:
            expected["quantile"] = quantile
    expected["value"] = round(number, 8)
    raw = encode_prediction(**fields, horizon_bars=horizon, quantile=quantile)
    assert raw == json.dumps(expected, separators=(",", ":"))


def test_output_specs_resolve_and_validate() -> None:
    assert _preprocess().output_specs() == [OutputSpec(target=DIRECTION, horizon_bars=1)]
    outputs = [
        {"target": VOLUME_SUM, "horizon_bars": h, "quantile": q} for h in (1, 6) for q in (0.5, 0.9)
    ]
    pre = _preprocess().model_copy(update={"target": VOLUME_SUM})
    scaled = Preprocess.model_validate(
        {**pre.model_dump(mode="json"), "outputs": outputs,
         "target_scaler": {"mean": [1.0] * 4, "scale": [2.0] * 4}}
    )  # fmt: skip
    assert [s.key for s in scaled.output_specs()] == [
        (VOLUME_SUM, 1, 0.5), (VOLUME_SUM, 1, 0.9), (VOLUME_SUM, 6, 0.5), (VOLUME_SUM, 6, 0.9)
    ]  # fmt: skip
    bad: dict[str, tuple[dict[str, Any], str]] = {
        "v1 horizon": ({"outputs": [{"target": VOLUME, "horizon_bars": 6}]}, "next bar"),
        "v1 quantile": (
            {"outputs": [{"target": VOLUME, "horizon_bars": 1, "quantile": 0.5}]}, "next bar"
        ),
        "direction quantile": (
            {"outputs": [{"target": DIRECTION_AT, "horizon_bars": 6, "quantile": 0.5}]}, "volume"
        ),
        "twice": ({"outputs": [outputs[0], outputs[0]]}, "twice"),
        "scaler": ({"outputs": outputs, "target_scaler": {"mean": [0.0], "scale": [1.0]}}, "4 out"),
        "horizon target alone": ({"target": VOLUME_SUM}, "needs outputs"),
        "empty": ({"outputs": []}, "at least 1"),
        "zero horizon": ({"outputs": [{"target": DIRECTION_AT, "horizon_bars": 0}]}, "greater"),
        "quantile 1": (
            {"outputs": [{"target": VOLUME_SUM, "horizon_bars": 1, "quantile": 1.0}]}, "less"
        ),
        "unknown field": ({"outputs": [{"target": VOLUME_SUM, "horizon_bars": 1, "q": 1}]}, "extra"),
    }  # fmt: skip
    for change, message in bad.values():
        with pytest.raises(ValueError, match=message):
            Preprocess.model_validate({**_preprocess().model_dump(mode="json"), **change})


def _preprocess() -> Preprocess:
    return Preprocess(
        feature_version=1, features=["a", "b"], window=24,
        scaler=Scaler(mean=[0.0, 1.0], scale=[1.0, 2.0]), target="p_up_next_bar",
    )  # fmt: skip


def _fill(directory: Path) -> None:
    (directory / "model.keras").write_bytes(b"zip")
    write_json(directory / "preprocess.json", _preprocess().model_dump(mode="json"))
    write_json(directory / "metadata.json", {"architecture": "test"})


def test_registry_write_and_current(tmp_path: Path) -> None:
    assert read_current(tmp_path, "direction") is None
    version, path = write_artifact(tmp_path, "direction", _fill)
    assert path.is_dir() and load_preprocess(path) == _preprocess()
    set_current(tmp_path, "direction", version)
    assert read_current(tmp_path, "direction") == version
    assert list_versions(tmp_path, "direction") == [version]
    assert not [p for p in (tmp_path / "direction").iterdir() if p.name.startswith(".")]


def test_incomplete_artifact_never_appears(tmp_path: Path) -> None:
    def half(directory: Path) -> None:
        (directory / "model.keras").write_bytes(b"zip")

    with pytest.raises(ArtifactError, match="missing"):
        write_artifact(tmp_path, "direction", half)
    assert list_versions(tmp_path, "direction") == []
    assert list((tmp_path / "direction").iterdir()) == []


def test_bad_preprocess_refused(tmp_path: Path) -> None:
    (tmp_path / "preprocess.json").write_text('{"format": "whalecast.preprocess/v1"}')
    with pytest.raises(ArtifactError):
        load_preprocess(tmp_path)
    with pytest.raises(ValueError):
        Scaler(mean=[0.0], scale=[0.0])


def test_set_current_requires_version(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        set_current(tmp_path, "direction", "20260101T000000Z-abcd")


def test_metrics_follow_naming_rules() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from whalecast.metrics import Metrics

    metrics = Metrics()
    metrics.bar_latency.labels("1h").observe(0.05)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    ours = [f for f in families if f.name.startswith("whalecast_")]
    assert len(ours) > 25
    for family in ours:
        for sample in family.samples:
            assert "symbol" not in sample.labels and "series" not in sample.labels, family.name
        if family.type == "counter":
            assert not family.name.endswith("_total"), "the parser strips _total"


def test_readme_lists_every_metric() -> None:
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    from whalecast.metrics import Metrics

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    families = text_string_to_metric_families(Metrics(process=False).render().decode())
    for family in families:
        if family.name.endswith("_created"):
            continue  # the client library's creation-time series, not ours
        suffix = "_total" if family.type == "counter" else ""
        assert f"`{family.name}{suffix}`" in readme, family.name


def test_target_names_are_one_set_everywhere() -> None:
    """The wire schema, the artifact format and every package read the kernel's names."""
    every = {DIRECTION, VOLUME, DIRECTION_AT, VOLUME_SUM}
    assert set(get_args(Target)) == every == set(MEANING) == set(TARGETS)
    assert (DIRECTION, VOLUME) == ("p_up_next_bar", "next_bar_volume")  # the published contract
    assert (DIRECTION_AT, VOLUME_SUM) == ("p_up_in_bars", "volume_next_bars")
    fields = Prediction.model_fields["target"].annotation
    assert set(get_args(fields)) == every
