"""The model-artifact format: where the trainer and the daemon meet.

``<registry>/<model>/<version>/`` holds ``model.keras`` (loaded in Keras safe
mode), ``preprocess.json`` (:class:`Preprocess`: no pickle anywhere),
``metadata.json``, ``report.json`` and plots. A version is written into a
temporary directory beside its final place and renamed into place, so a reader
never sees half an artifact. ``<registry>/<model>/CURRENT`` names the version in
service and is replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from whalecast.targets import NEXT_BAR_TARGETS, VOLUME_TARGETS, Target

PREPROCESS_FORMAT = "whalecast.preprocess/v1"
MODEL_FILE = "model.keras"
PREPROCESS_FILE = "preprocess.json"
METADATA_FILE = "metadata.json"
REPORT_FILE = "report.json"
CURRENT_FILE = "CURRENT"
REQUIRED_FILES = (MODEL_FILE, PREPROCESS_FILE, METADATA_FILE)
_VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4,}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ArtifactError(Exception):
    """An artifact is missing, incomplete or does not describe a usable model."""


class Scaler(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: list[float]
    scale: list[float]

    @model_validator(mode="after")
    def _same_length_positive_scale(self) -> Scaler:
        if len(self.mean) != len(self.scale):
            raise ValueError("mean and scale differ in length")
        if any(not s > 0 for s in self.scale):
            raise ValueError("every scale must be positive")
        return self


class OutputSpec(BaseModel):
    """What one unit of the model's last layer predicts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Target
    horizon_bars: int = Field(ge=1)
    quantile: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _target_allows_horizon_and_quantile(self) -> OutputSpec:
        if self.target in NEXT_BAR_TARGETS and (
            self.horizon_bars != 1 or self.quantile is not None
        ):
            raise ValueError(f"{self.target} is the next bar's: horizon_bars 1 and no quantile")
        if self.quantile is not None and self.target not in VOLUME_TARGETS:
            raise ValueError(f"a quantile needs a volume target, not {self.target}")
        return self

    @property
    def key(self) -> tuple[str, int, float | None]:
        return (self.target, self.horizon_bars, self.quantile)


class Preprocess(BaseModel):
    """How to turn stored feature windows into model input and model output into a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["whalecast.preprocess/v1"] = "whalecast.preprocess/v1"
    feature_version: int = Field(ge=1)
    features: list[str] = Field(min_length=1)
    window: int = Field(ge=1)
    scaler: Scaler
    target: Target
    target_transform: Literal["identity", "log1p"] = "identity"
    target_scaler: Scaler | None = None
    #: The model's outputs, one per unit of its last layer in that order; ``None`` is
    #: the single v1 output ``(target, 1, None)``. ``target_transform`` applies to
    #: every output and ``target_scaler`` has one mean and scale per output.
    outputs: list[OutputSpec] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _scaler_matches_features(self) -> Preprocess:
        if len(self.scaler.mean) != len(self.features):
            raise ValueError("scaler has a different number of columns than features")
        if len(set(self.features)) != len(self.features):
            raise ValueError("a feature is listed twice")
        return self

    @model_validator(mode="after")
    def _outputs_distinct_and_scaled(self) -> Preprocess:
        if self.outputs is None and self.target not in NEXT_BAR_TARGETS:
            raise ValueError(f"target {self.target} needs outputs with its horizons")
        specs = self.output_specs()
        keys = [spec.key for spec in specs]
        if len(set(keys)) != len(keys):
            raise ValueError("an output (target, horizon_bars, quantile) is listed twice")
        if self.target_scaler is not None and len(self.target_scaler.mean) != len(specs):
            raise ValueError(
                f"target_scaler has {len(self.target_scaler.mean)} columns, "
                f"the model has {len(specs)} outputs"
            )
        return self

    def output_specs(self) -> list[OutputSpec]:
        """The resolved outputs, in the order of the model's last layer."""
        if self.outputs is None:
            return [OutputSpec(target=self.target, horizon_bars=1)]
        return list(self.outputs)


def new_version(now: datetime | None = None) -> str:
    """A sortable, unique version name such as ``20261122T060000Z-3f2a``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def check_name(model: str) -> str:
    if not _NAME_RE.match(model):
        raise ArtifactError(f"model name {model!r} must be lower-case letters, digits, - or _")
    return model


def model_dir(registry: Path, model: str) -> Path:
    return Path(registry) / check_name(model)


def version_dir(registry: Path, model: str, version: str) -> Path:
    if not _VERSION_RE.match(version):
        raise ArtifactError(f"{version!r} is not a version name")
    return model_dir(registry, model) / version


def write_artifact(
    registry: Path, model: str, fill: Callable[[Path], None], version: str | None = None
) -> tuple[str, Path]:
    """Create a version: ``fill(tmp_dir)`` writes the files, then it is renamed into place."""
    version = version or new_version()
    final = version_dir(registry, model, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=final.parent))
    try:
        fill(tmp)
        missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
        if missing:
            raise ArtifactError(f"artifact for {model} is missing {', '.join(missing)}")
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, final


def read_current(registry: Path, model: str) -> str | None:
    """The version in service, or ``None`` when the model has none yet."""
    try:
        text = (model_dir(registry, model) / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def set_current(registry: Path, model: str, version: str) -> None:
    """Point ``CURRENT`` at ``version`` atomically (write a temp file, then rename)."""
    target = version_dir(registry, model, version)
    if not target.is_dir():
        raise ArtifactError(f"no version {version} of {model} in {registry}")
    pointer = model_dir(registry, model) / CURRENT_FILE
    fd, tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=pointer.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(version + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, pointer)


def list_versions(registry: Path, model: str) -> list[str]:
    folder = model_dir(registry, model)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and _VERSION_RE.match(p.name))


def baseline_label(baseline: dict[str, Any]) -> str:
    """How a version written as the strong baseline (its metadata's ``baseline``) is named:
    ``logistic itself`` (the evaluation's own model) or ``ridge over its window``."""
    how = "itself" if baseline.get("itself") else "over its window"
    return f"{baseline['kind']} {how}"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    return data


def load_preprocess(directory: Path) -> Preprocess:
    try:
        return Preprocess.model_validate(read_json(directory / PREPROCESS_FILE))
    except ValidationError as e:
        raise ArtifactError(f"{directory / PREPROCESS_FILE} is not valid: {e}") from e


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", "utf-8")
