"""The artifact's ONNX graphs: what the ``onnx`` backend serves, without TensorFlow.

Beside ``model.keras`` a version may hold (written by the trainer, or added later by
``whalecast export-onnx``):

- ``full.onnx``: the model on a full window, input ``windows`` ``(n, window, features)``,
  output the raw values ``(n, outputs)`` (one per output of ``preprocess.json``);
- ``prime.onnx`` and ``step.onnx``, when the model splits (:mod:`whalecast.keras_split`):
  prime takes ``older`` ``(n, window - 1, features)`` and returns the recurrent states
  (h, c per LSTM layer, h per GRU layer, in call order); step takes ``newest``
  ``(n, 1, features)`` and ``state_0 .. state_k`` and returns the raw values;
- ``graphs.json`` (:class:`GraphsManifest`), written last: each graph's file, size and
  SHA-256, the state widths, why there is no step graph when there is none, and the
  check window: a few batches of scaled input with the Keras model's own output on
  each, so the daemon verifies the graphs against Keras at load without importing it.

A graph whose bytes do not match the manifest is refused. The manifest is replaced
atomically, after the graphs it names are in place, so a reader never sees a manifest
naming a half-written graph.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from whalecast.artifact import ArtifactError, read_json, write_json

GRAPHS_FORMAT = "whalecast.graphs/v1"
GRAPHS_FILE = "graphs.json"
FULL_GRAPH = "full.onnx"
PRIME_GRAPH = "prime.onnx"
STEP_GRAPH = "step.onnx"
GRAPH_FILES = (FULL_GRAPH, PRIME_GRAPH, STEP_GRAPH)
MAX_GRAPH_BYTES = 50 * 1024 * 1024
#: rows of the check batches: one row, a few, and more than one thread's share
CHECK_ROWS = (1, 7, 32)


class GraphFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Literal["full.onnx", "prime.onnx", "step.onnx"]
    bytes: int = Field(ge=1, le=MAX_GRAPH_BYTES)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class CheckBatch(BaseModel):
    """Scaled input ``(rows, window, features)`` (float32, little-endian, base64) and the
    Keras model's raw output on it, row by row (``rows * outputs`` values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=1)
    data: str
    keras: list[float]

    def array(self, window: int, features: int) -> np.ndarray:
        raw = base64.b64decode(self.data, validate=True)
        if len(raw) != self.rows * window * features * 4 or len(self.keras) % self.rows:
            raise ArtifactError(f"{GRAPHS_FILE}: a check batch does not hold {self.rows} rows")
        return np.frombuffer(raw, dtype="<f4").reshape(self.rows, window, features).copy()


class GraphsManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["whalecast.graphs/v1"] = "whalecast.graphs/v1"
    opset: int = Field(ge=1)
    window: int = Field(ge=1)
    features: int = Field(ge=1)
    full: GraphFile
    prime: GraphFile | None = None
    step: GraphFile | None = None
    #: width of each recurrent state the prime graph returns and the step graph takes
    states: list[int] = Field(default_factory=list)
    #: why there are no prime and step graphs, when there are none
    incremental_off: str = ""
    check: list[CheckBatch] = Field(min_length=1)


@dataclass(frozen=True)
class Graphs:
    """The manifest and each graph's checked bytes."""

    manifest: GraphsManifest
    full: bytes
    prime: bytes | None
    step: bytes | None

    def check_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each check batch and the Keras output on it, ``(rows, outputs)`` float32."""
        m = self.manifest
        return [
            (
                batch.array(m.window, m.features),
                np.asarray(batch.keras, dtype=np.float32).reshape(batch.rows, -1),
            )
            for batch in m.check
        ]


def check_batch(window: int, features: int, rows: int, seed: int = 0) -> np.ndarray:
    """Scaled-space input (standard normal, like real scaled features)."""
    rng = np.random.default_rng(seed + rows)
    return rng.standard_normal((rows, window, features)).astype(np.float32)


def encode_batch(batch: np.ndarray, keras_output: np.ndarray) -> CheckBatch:
    data = base64.b64encode(np.ascontiguousarray(batch, dtype="<f4").tobytes()).decode()
    values = np.asarray(keras_output).reshape(-1)
    return CheckBatch(rows=len(batch), data=data, keras=[float(v) for v in values])


def describe(name: str, data: bytes) -> GraphFile:
    return GraphFile.model_validate(
        {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    )


def has_graphs(directory: Path) -> bool:
    return (Path(directory) / GRAPHS_FILE).is_file()


def read_graphs(directory: Path) -> Graphs:
    """The version's graphs, each checked against the manifest's size and checksum."""
    directory = Path(directory)
    if not has_graphs(directory):
        raise ArtifactError(
            f"{directory} has no ONNX graphs ({GRAPHS_FILE}); add them with "
            "'whalecast export-onnx <version directory>'"
        )
    try:
        manifest = GraphsManifest.model_validate(read_json(directory / GRAPHS_FILE))
    except ValidationError as e:
        raise ArtifactError(f"{directory / GRAPHS_FILE} is not valid: {e}") from e
    if (manifest.prime is None) != (manifest.step is None):
        raise ArtifactError(f"{GRAPHS_FILE} names a prime graph without a step graph or back")
    return Graphs(
        manifest,
        _read_checked(directory, manifest.full),
        _read_checked(directory, manifest.prime) if manifest.prime else None,
        _read_checked(directory, manifest.step) if manifest.step else None,
    )


def _read_checked(directory: Path, entry: GraphFile) -> bytes:
    path = directory / entry.file
    try:
        if path.is_symlink() or path.stat().st_size != entry.bytes:
            raise ArtifactError(f"{entry.file} is not the {entry.bytes} bytes {GRAPHS_FILE} names")
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e}") from e
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ArtifactError(f"{entry.file} does not match its checksum in {GRAPHS_FILE}")
    return data


def write_graphs(directory: Path, manifest: GraphsManifest, graphs: dict[str, bytes]) -> None:
    """Put the graph files in place, then the manifest naming them (each replaced atomically)."""
    directory = Path(directory)
    named = [e for e in (manifest.full, manifest.prime, manifest.step) if e is not None]
    if sorted(e.file for e in named) != sorted(graphs):
        raise ArtifactError("the manifest does not name exactly the graphs written")
    for entry in named:
        if describe(entry.file, graphs[entry.file]) != entry:
            raise ArtifactError(f"{entry.file} does not match its manifest entry")
        _replace(directory / entry.file, partial(_write_bytes, data=graphs[entry.file]))
    body = manifest.model_dump(mode="json")
    _replace(directory / GRAPHS_FILE, lambda path: write_json(path, body))
    for stale in set(GRAPH_FILES) - set(graphs):  # e.g. a step graph the new export has not
        (directory / stale).unlink(missing_ok=True)


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _replace(final: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
