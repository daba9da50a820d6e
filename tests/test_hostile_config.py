"""Hostile configuration files (hypothesis and hand-made): ``load_settings`` gives settings or
a ``ConfigError`` naming the bad keys, never another exception, never a secret in the
message, and never spends unbounded time or memory (size cap, nesting, alias bombs)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whalecast.settings import MAX_CONFIG_BYTES, ConfigError, Settings, load_settings

FUZZ = settings(
    max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
SECRET = "s3cret-value-that-must-not-show"

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30) | st.just(SECRET)
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
SECTIONS = {name: field for name, field in Settings.model_fields.items()}


def section_fields(name: str) -> list[str]:
    annotation = SECTIONS[name].annotation
    fields = getattr(annotation, "model_fields", None)
    return sorted(fields) if fields else ["id", "symbols", "api_key"]


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """Real section and field names with hostile values, plus unknown keys now and then."""
    chosen = draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=4, unique=True))
    config: dict[str, Any] = {}
    for name in chosen:
        keys = st.sampled_from(section_fields(name)) | st.text(min_size=1, max_size=8)
        config[name] = draw(st.dictionaries(keys, values, max_size=4) | values)
    return config


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_or_config_error(path: Path) -> Settings | None:
    try:
        return load_settings(path)
    except ConfigError as e:
        message = str(e)
        assert SECRET not in message
        assert message.strip()
        return None


@FUZZ
@given(config=configs())
def test_structured_configs_load_or_fail_clearly(config: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path / "config.yml", yaml.safe_dump(config, allow_unicode=True))
    loaded = load_or_config_error(path)
    if loaded is not None:  # whatever got through is finite and of the declared types
        for section in loaded.model_dump().values():
            for value in section.values() if isinstance(section, dict) else [section]:
                if isinstance(value, float):
                    assert math.isfinite(value)


@FUZZ
@given(text=st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_loads_or_fails_clearly(text: str, tmp_path: Path) -> None:
    load_or_config_error(write(tmp_path / "config.yml", text))


@pytest.mark.parametrize(
    "text",
    [
        "feed:\n  grace_seconds: .inf\n",
        "feed:\n  grace_seconds: .nan\n",
        "whale:\n  min_value_usd: .inf\n",
        "metrics:\n  port: 1e400\n",
        "features:\n  window: 100000000000000000000000\n",
        f"redis:\n  password: [{SECRET}]\n",
        f"redis:\n  url: {SECRET}\n",
        "exchanges: " + "[" * 3000 + "]" * 3000 + "\n",
        "shard: {index: -1, count: 0}\n",
    ],
)
def test_non_finite_huge_nested_and_wrong_types_fail_clearly(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "config.yml", text)
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert str(path) in str(refused.value)
    assert SECRET not in str(refused.value)


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(path)


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """A billion-laughs document: nine levels of ten aliases each (10^9 leaves if expanded)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append("exchanges:\n  - id: binance\n    symbols: *a9")
    path = write(tmp_path / "config.yml", "\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError):
        load_settings(path)
    assert time.monotonic() - started < 5.0
