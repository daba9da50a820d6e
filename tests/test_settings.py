"""Settings: precedence (file < env < secret file), rejection naming the key, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from whalecast.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_is_valid() -> None:
    settings = load_settings(ROOT / "config.yml")
    assert settings.redis.url == "embedded"
    assert settings.exchanges[0].id == "binance"


def test_defaults_without_any_file() -> None:
    settings = load_settings()
    assert settings.features.window == 24
    assert settings.metrics.host == "127.0.0.1"


def test_precedence_file_then_env_then_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "c.yml", "redis:\n  prefix: from-file\n  password: file-pw\n")
    assert load_settings(config).redis.prefix == "from-file"
    assert load_settings(config).redis.password.get_secret_value() == "file-pw"

    monkeypatch.setenv("WHALECAST_REDIS__PREFIX", "from-env")
    monkeypatch.setenv("WHALECAST_REDIS__PASSWORD", "env-pw")
    settings = load_settings(config)
    assert settings.redis.prefix == "from-env"
    assert settings.redis.password.get_secret_value() == "env-pw"

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    write(secrets / "redis_password", "file-secret-pw\n")
    write(secrets / "exchange_binance_api_key", "k-123")
    monkeypatch.setenv("WHALECAST_SECRETS_DIR", str(secrets))
    settings = load_settings(config)
    assert settings.redis.password.get_secret_value() == "file-secret-pw"
    assert settings.credentials["binance"].api_key.get_secret_value() == "k-123"
    assert settings.redis.prefix == "from-env"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "c.yml", "features:\n  window: 12\n")
    monkeypatch.setenv("WHALECAST_CONFIG", str(config))
    assert load_settings().features.window == 12


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("redis:\n  prot: 6379\n", "redis.prot"),
        ("feed:\n  grace_seconds: soon\n", "feed.grace_seconds"),
        ("feed:\n  grace_seconds: -1\n", "feed.grace_seconds"),
        ("nonsense: 1\n", "nonsense"),
        ("exchanges:\n  - id: binance\n    symbols: [BTCUSDT]\n", "exchanges.0.symbols"),
        (
            "exchanges:\n  - id: binance\n    symbols: [BTC/USDT]\n    timeframe: 7x\n",
            "exchanges.0.timeframe",
        ),
        ("redis:\n  url: http://example\n", "redis.url"),
        ("inference:\n  backend: magic\n", "inference.backend"),
    ],
)
def test_bad_file_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    config = write(tmp_path / "bad.yml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert f"{key}:" in message
    assert str(config) in message


def test_bad_env_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALECAST_METRICS__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"metrics\.port.*WHALECAST_METRICS__PORT"):
        load_settings()


def test_unknown_env_section_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALECAST_REDDIS__URL", "redis://x")
    with pytest.raises(ConfigError, match="WHALECAST_REDDIS__URL"):
        load_settings()


@pytest.mark.parametrize(
    "text",
    ["[1, 2, 3]\n", "redis: [\n", "a: " + "[" * 5000 + "]" * 5000 + "\n"],
)
def test_malformed_files_fail_clearly(tmp_path: Path, text: str) -> None:
    config = write(tmp_path / "bad.yml", text)
    with pytest.raises(ConfigError, match=str(config)):
        load_settings(config)


def test_missing_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.yml")


def test_secrets_masked_everywhere(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yml",
        "redis:\n  password: hunter2-pw\nwhale:\n  api_key: wa-key-42\n"
        "credentials:\n  binance:\n    api_key: ex-key-7\n    secret: ex-secret-9\n",
    )
    settings = load_settings(config)
    rendered = repr(settings) + str(settings) + str(settings.masked())
    for secret in ("hunter2-pw", "wa-key-42", "ex-key-7", "ex-secret-9"):
        assert secret not in rendered
    assert settings.whale.api_key.get_secret_value() == "wa-key-42"
