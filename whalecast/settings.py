"""The one typed settings object, built once in ``main`` and passed down.

Sources, lowest precedence first:

1. ``config.yml`` (path from ``--config`` or ``WHALECAST_CONFIG``),
2. environment variables ``WHALECAST_<SECTION>__<KEY>`` (e.g. ``WHALECAST_REDIS__URL``),
3. secret files in the secrets directory (``WHALECAST_SECRETS_DIR``, else systemd's
   ``$CREDENTIALS_DIRECTORY``, else ``/run/secrets``): ``redis_password``,
   ``redis_username``, ``whale_api_key``, ``exchange_<id>_api_key``, ``exchange_<id>_secret``.

Unknown keys and wrong types are rejected; :func:`load_settings` raises
:class:`ConfigError` naming each bad key and where it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from whalecast.domain import timeframe_ms

ENV_PREFIX = "WHALECAST_"
ENV_DELIMITER = "__"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
MAX_CONFIG_BYTES = 1_000_000


class ConfigError(Exception):
    """Settings could not be built; the message names every bad key and its source."""


class Section(BaseModel):
    # no NaN or infinity anywhere: an infinite timeout or size would fail far from its cause
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


PositiveSeconds = Annotated[float, Field(gt=0)]


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class RedisSettings(Section):
    url: str = "embedded"
    state_dir: Path = Path(".whalecast/redis")
    prefix: str = Field("whalecast", pattern=r"^[A-Za-z0-9_.-]+$")
    username: SecretStr | None = None
    password: SecretStr | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    socket_timeout_seconds: PositiveSeconds = 5.0
    stream_maxlen: int = Field(100_000, gt=0)
    cluster: bool = False

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url == "embedded" or url.split("://", 1)[0] in {"redis", "rediss", "unix"}:
            return url
        raise ValueError("must be 'embedded' or a redis://, rediss:// or unix:// URL")


class ExchangeSettings(Section):
    id: str = Field(pattern=r"^[a-z0-9]+$")
    symbols: list[str] = Field(min_length=1)
    timeframe: str = "1h"
    rest_url: str | None = None
    ws_url: str | None = None
    enable_rate_limit: bool = True
    max_streams_per_connection: int = Field(200, gt=0)
    subscribe_messages_per_second: float = Field(5.0, gt=0)

    @field_validator("timeframe")
    @classmethod
    def _valid_timeframe(cls, timeframe: str) -> str:
        timeframe_ms(timeframe)
        return timeframe

    @field_validator("symbols")
    @classmethod
    def _unified_symbols(cls, symbols: list[str]) -> list[str]:
        for symbol in symbols:
            if symbol.count("/") != 1 or symbol != symbol.strip():
                raise ValueError(f"symbol {symbol!r} is not a unified BASE/QUOTE name")
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols are listed twice")
        return symbols


class ExchangeCredentials(Section):
    api_key: SecretStr | None = None
    secret: SecretStr | None = None


class FeedSettings(Section):
    grace_seconds: PositiveSeconds = 10.0
    stale_after_seconds: PositiveSeconds = 90.0
    backoff_initial_seconds: PositiveSeconds = 1.0
    backoff_max_seconds: PositiveSeconds = 60.0
    backoff_reset_after_seconds: PositiveSeconds = 300.0
    connection_lifetime_seconds: PositiveSeconds = 23 * 3600.0
    client_recreate_seconds: PositiveSeconds = 6 * 3600.0
    max_future_seconds: PositiveSeconds = 120.0
    max_age_days: PositiveSeconds = 3650.0
    ohlcv_cache_limit: int = Field(50, gt=1)
    clock: Literal["live", "replay"] = "live"
    replay_clock_poll_seconds: PositiveSeconds = 0.05
    deadline_check_seconds: PositiveSeconds = 0.2
    batch_wait_seconds: PositiveSeconds = 0.25
    backfill_concurrency: int = Field(4, gt=0, le=64)
    rest_retries: int = Field(5, ge=0)


class WhaleSettings(Section):
    enabled: bool = False
    url: str = "wss://leviathan.whale-alert.io/ws"
    api_key: SecretStr | None = None
    blockchains: list[str] = Field(default_factory=lambda: ["bitcoin", "ethereum"])
    symbols: list[str] = Field(default_factory=lambda: ["btc", "eth", "usdt", "usdc"])
    tx_types: list[str] = Field(default_factory=lambda: ["transfer"])
    min_value_usd: float = Field(1_000_000.0, ge=0)
    stablecoins: list[str] = Field(default_factory=lambda: ["USDT", "USDC", "DAI", "FDUSD"])
    ping_interval_seconds: PositiveSeconds = 20.0
    max_delay_seconds: PositiveSeconds = 3600.0  # block to receipt; older alerts: "late"
    history_delay_seconds: float = Field(300.0, ge=0)  # block-time history shifted by this
    record_path: Path | None = None  # JSON lines of admitted alerts with their knowledge time


class FeatureSettings(Section):
    window: int = Field(24, ge=2, le=512)
    store_ttl_seconds: PositiveSeconds = 7 * 86_400.0


class InferenceSettings(Section):
    registry: Path = Path(".whalecast/models")
    models: list[str] = Field(default_factory=lambda: ["direction", "volume"])
    backend: Literal["onnx", "tf-function", "tf-xla", "keras"] = "tf-function"
    incremental: bool = True  # prime recurrent states between bars, step the newest row at it
    early_pass: bool = True  # start the bar's forward pass while Redis stores its last candles
    priming: bool = True  # prime after each bar, at start-up and for a parked version
    freeze_heap: bool = True  # freeze the heap once models are loaded (no GC walks over them)
    batch_buckets: list[int] = Field(default_factory=lambda: [1, 8, 32, 128, 512, 1024, 4096])
    expiry_hours: PositiveSeconds = 24.0 * 14
    stop_serving_expired: bool = False
    reload_poll_seconds: PositiveSeconds = 30.0
    shutdown_grace_seconds: PositiveSeconds = 10.0
    scoring_window: int = Field(500, gt=0)
    registry_sync: Literal["none", "redis"] = "none"

    @field_validator("batch_buckets")
    @classmethod
    def _positive_buckets(cls, buckets: list[int]) -> list[int]:
        if not buckets or min(buckets) < 1:
            raise ValueError("batch_buckets must hold at least one positive size")
        return sorted(set(buckets))


class MetricsSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    status_seconds: PositiveSeconds = 2.0  # how often the daemon writes its status to Redis


class UiSettings(Section):
    """``whalecast ui``: the web page, a process of its own reading only Redis."""

    host: str = "127.0.0.1"
    port: int = Field(9110, ge=0, le=65535)
    push_seconds: PositiveSeconds = 0.05  # changed rows go to browsers at most this often
    status_seconds: PositiveSeconds = 2.0  # models and feeds are re-read this often
    history_bars: int = Field(200, ge=10, le=10_000)  # predictions kept per series for charts


class ShardSettings(Section):
    index: int = Field(0, ge=0)
    count: int = Field(1, ge=1)
    index_from_hostname: bool = False

    @model_validator(mode="after")
    def _index_in_range(self) -> ShardSettings:
        if not self.index_from_hostname and self.index >= self.count:
            raise ValueError(f"shard.index {self.index} is outside 0..{self.count - 1}")
        return self


PresetName = Literal[
    "volume",
    "volume-wide",
    "direction",
    "direction-wide",
    "direction-deep",
    "direction-gru",
    "ensemble",
    "volume-horizons",
    "direction-horizons",
]
HyperValue = int | float | bool | str | list[str]


class TrainingJob(Section):
    """One entry of ``training.jobs``: what one of several parallel trainers builds."""

    preset: PresetName
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # registry name; default: preset
    symbols: list[str] = Field(default_factory=list)  # train on these only; empty: every series


class TrainingSettings(Section):
    """The trainer (``whalecast train`` / ``whalecast tune``); the daemon never reads it."""

    preset: PresetName = "direction"
    presets: dict[PresetName, dict[str, HyperValue]] = Field(default_factory=dict)
    epochs: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    learning_rate: float | None = Field(None, gt=0)
    window_bars: int | None = Field(None, ge=2, le=512)
    look_back_bars: int | None = Field(None, ge=2, le=512)
    test_days: float = Field(365.0, gt=0)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    train_days: float | None = Field(None, gt=0)
    purge_bars: int = Field(24, ge=1)
    candles_csv: list[Path] = Field(default_factory=list)
    whale_csv: list[Path] = Field(default_factory=list)
    history_days: float = Field(730.0, gt=0)
    cache_dir: Path = Path(".whalecast/history")
    fees_bps: float = Field(10.0, ge=0)
    threshold: float = Field(0.0, ge=0, lt=0.5)
    backtest_mode: Literal["long_flat", "long_short"] = "long_flat"
    bootstrap_samples: int = Field(1000, ge=10)
    bootstrap_block_hours: float = Field(24.0, gt=0)
    seed: int = 42
    promote_metric_direction: Literal["auc", "accuracy", "balanced_accuracy", "log_loss"] = "auc"
    promote_metric_volume: Literal["mae", "rmse", "mape"] = "mae"
    promote_min_improvement: float = Field(0.0, ge=0)
    promote_requires_significance: bool = True
    promote_against_baseline: bool = True
    # when the network does not beat the strong baseline, also write that baseline (fitted
    # over the same window) as a version of the model, promoted under the same rules
    baseline_fallback: bool = True
    refresh_every_seconds: PositiveSeconds | None = None
    tune_trials: int = Field(20, gt=0)
    tune_epochs: int = Field(10, gt=0)
    jobs: list[TrainingJob] = Field(default_factory=list)
    job_index: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _jobs_distinct(self) -> TrainingSettings:
        names = [job.name or job.preset for job in self.jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"training.jobs: two jobs write the same model ({names})")
        return self


class Settings(BaseSettings):
    """Everything configurable; see the shipped ``config.yml`` for each key's meaning."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    log: LogSettings = LogSettings()
    redis: RedisSettings = RedisSettings()
    exchanges: list[ExchangeSettings] = Field(
        default_factory=lambda: [ExchangeSettings(id="binance", symbols=["BTC/USDT", "ETH/USDT"])]
    )
    credentials: dict[str, ExchangeCredentials] = Field(default_factory=dict)
    feed: FeedSettings = FeedSettings()
    whale: WhaleSettings = WhaleSettings()
    features: FeatureSettings = FeatureSettings()
    inference: InferenceSettings = InferenceSettings()
    metrics: MetricsSettings = MetricsSettings()
    ui: UiSettings = UiSettings()
    shard: ShardSettings = ShardSettings()
    training: TrainingSettings = TrainingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # earlier wins: secret files > environment > config file (passed as init kwargs)
        return (SecretFilesSource(settings_cls), env_settings, init_settings)

    def masked(self) -> dict[str, Any]:
        """A JSON-safe dump; pydantic renders every ``SecretStr`` as ``**********``."""
        return self.model_dump(mode="json")


class SecretFilesSource(PydanticBaseSettingsSource):
    """Reads secrets from one file each (Docker/Kubernetes secrets, systemd credentials)."""

    FIXED: ClassVar[dict[str, tuple[str, ...]]] = {
        "redis_password": ("redis", "password"),
        "redis_username": ("redis", "username"),
        "whale_api_key": ("whale", "api_key"),
    }

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.directory = secrets_dir()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole dict

    def __call__(self) -> dict[str, Any]:
        if not self.directory.is_dir():
            return {}
        found: dict[str, Any] = {}
        for path in sorted(self.directory.iterdir()):
            target = self._target(path.name)
            if target is None or not path.is_file():
                continue
            node = found
            for part in target[:-1]:
                node = node.setdefault(part, {})
            node[target[-1]] = path.read_text(encoding="utf-8").strip()
        return found

    def _target(self, name: str) -> tuple[str, ...] | None:
        if name in self.FIXED:
            return self.FIXED[name]
        for suffix in ("_api_key", "_secret"):
            if name.startswith("exchange_") and name.endswith(suffix):
                exchange = name[len("exchange_") : -len(suffix)]
                return ("credentials", exchange, suffix[1:])
        return None


def secrets_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("WHALECAST_SECRETS_DIR"):
        return Path(env["WHALECAST_SECRETS_DIR"])
    if env.get("CREDENTIALS_DIRECTORY"):
        return Path(env["CREDENTIALS_DIRECTORY"])
    return DEFAULT_SECRETS_DIR


def with_shard_from_hostname(settings: Settings, hostname: str) -> Settings:
    """``shard.index_from_hostname``: the index is the trailing ``-N`` of ``hostname``.

    A StatefulSet names its pods ``<name>-<ordinal>``, and the pod's hostname is its
    name. Returns settings with that index (and the flag cleared), or raises
    :class:`ConfigError`. Without the flag the settings come back unchanged.
    """
    shard = settings.shard
    if not shard.index_from_hostname:
        return settings
    match = re.fullmatch(r".*-([0-9]+)", hostname)
    if match is None:
        raise ConfigError(
            f"shard.index_from_hostname is set but the host name {hostname!r} "
            "does not end in -<ordinal>"
        )
    index = int(match.group(1))
    if index >= shard.count:
        raise ConfigError(
            f"shard index {index} (from the host name {hostname!r}) is outside "
            f"0..{shard.count - 1} (shard.count)"
        )
    resolved = shard.model_copy(update={"index": index, "index_from_hostname": False})
    return settings.model_copy(update={"shard": resolved})


def config_path(cli_path: str | Path | None = None) -> Path | None:
    """The config file to read: ``--config``, else ``WHALECAST_CONFIG``, else none."""
    if cli_path is not None:
        return Path(cli_path)
    if os.environ.get("WHALECAST_CONFIG"):
        return Path(os.environ["WHALECAST_CONFIG"])
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    except RecursionError as e:
        raise ConfigError(f"{path}: nested too deeply") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    odd = [repr(key) for key in data if not isinstance(key, str)]
    if odd:
        raise ConfigError(f"{path}: section names must be text, not {', '.join(odd[:5])}")
    return data


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from file, environment and secret files, or raise ConfigError.

    ``overrides`` replace top-level sections of the file (the demo and tests use
    this for embedded defaults); the environment and secret files still win.
    """
    resolved = config_path(path)
    data = read_config_file(resolved) if resolved is not None else {}
    data.update(overrides)
    _reject_unknown_env()
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_describe(e, data, resolved)) from e


OWN_ENV = {"CONFIG", "SECRETS_DIR"}  # read by load_settings itself, not settings keys


def _reject_unknown_env() -> None:
    known = {name.upper() for name in Settings.model_fields} | OWN_ENV
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        section = upper[len(ENV_PREFIX) :].split(ENV_DELIMITER, 1)[0]
        if section not in known:
            raise ConfigError(
                f"invalid configuration: unknown environment variable {name} "
                f"(sections are {', '.join(sorted(Settings.model_fields))})"
            )


def _describe(error: ValidationError, file_data: dict[str, Any], path: Path | None) -> str:
    lines = [f"invalid configuration ({error.error_count()} problem(s)):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        lines.append(f"  {key}: {item['msg']} ({_origin(item['loc'], file_data, path)})")
    return "\n".join(lines)


def _origin(loc: tuple[Any, ...], file_data: dict[str, Any], path: Path | None) -> str:
    env_name = ENV_PREFIX + ENV_DELIMITER.join(str(p) for p in loc if not isinstance(p, int))
    if env_name.upper() in {k.upper() for k in os.environ}:
        return f"environment variable {env_name.upper()}"
    node: Any = file_data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = _MISSING
            break
    if node is not _MISSING:
        return f"in {path}" if path is not None else "in the built-in defaults"
    if loc and str(loc[0]) in {"redis", "whale", "credentials"}:
        return f"a secret file in {secrets_dir()} or the config"
    return f"in {path}" if path is not None else "no config file given"


_MISSING = object()
