"""Checks an artifact before anything in it is deserialized.

Keras' safe mode already refuses ``Lambda`` layers carrying Python bytecode;
this module adds a second, independent wall that runs before Keras sees a byte:

- the version directory holds only plain files with allowed suffixes (no
  pickle, joblib, numpy or legacy HDF5 model files, no links, no folders), ONNX
  graphs within a size bound (they are loaded only when the manifest's checksum
  matches, see :mod:`whalecast.graphs`);
- ``model.keras`` is a zip holding exactly Keras' three members, within a size
  bound (no zip bombs, no extra payloads);
- every object its ``config.json`` names comes from Keras' own public modules
  (layers, initializers, regularizers, constraints), is a class, and is not one
  that runs code (``Lambda``, ``TFSMLayer``): references to functions such as
  ``keras.config.enable_unsafe_deserialization`` or ``keras.utils.get_file``
  are refused.

The checked bytes are what gets loaded (no second read of the file).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from whalecast.artifact import MODEL_FILE
from whalecast.graphs import MAX_GRAPH_BYTES

MAX_MODEL_BYTES = 50 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
ALLOWED_SUFFIXES = frozenset({".json", ".keras", ".onnx", ".png", ".svg", ".txt", ".md", ".csv"})
KERAS_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
ALLOWED_MODULES = frozenset({
    "keras", "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
    "keras.src.models.functional", "keras.src.models.sequential",
})  # fmt: skip
REFUSED_CLASSES = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
_INTERNAL_CLASSES = frozenset({"__keras_tensor__"})
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


class UnsafeArtifact(Exception):
    """The artifact holds something that could run code or is not what it claims to be."""


def check_directory(directory: Path) -> None:
    """Refuse files the format does not use (pickles, links, folders, unknown suffixes)."""
    for path in sorted(directory.iterdir()):
        if path.is_symlink() or not path.is_file():
            raise UnsafeArtifact(f"{path.name} is not a plain file")
        if path.suffix.lower() not in ALLOWED_SUFFIXES:
            raise UnsafeArtifact(
                f"{path.name} has a suffix the artifact format does not use "
                f"(allowed: {', '.join(sorted(ALLOWED_SUFFIXES))})"
            )
        if path.suffix.lower() == ".keras" and path.name != MODEL_FILE:
            raise UnsafeArtifact(f"{path.name}: only {MODEL_FILE} may be a Keras archive")
        if path.suffix.lower() == ".onnx" and path.stat().st_size > MAX_GRAPH_BYTES:
            raise UnsafeArtifact(f"{path.name} is larger than {MAX_GRAPH_BYTES} bytes")
        if path.suffix.lower() == ".json" and path.stat().st_size > MAX_JSON_BYTES:
            raise UnsafeArtifact(f"{path.name} is larger than {MAX_JSON_BYTES} bytes")


def read_model_archive(path: Path, max_bytes: int = MAX_MODEL_BYTES) -> bytes:
    """Read ``model.keras``, check it, and return the bytes to load."""
    size = path.stat().st_size
    if size > max_bytes:
        raise UnsafeArtifact(f"{path.name} is {size} bytes, more than {max_bytes}")
    data = path.read_bytes()
    check_model_archive(data, max_bytes)
    return data


def check_model_archive(data: bytes, max_bytes: int = MAX_MODEL_BYTES) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise UnsafeArtifact(f"{MODEL_FILE} is not a Keras zip archive") from e
    with archive:
        members = archive.infolist()
        names = {member.filename for member in members}
        if names != KERAS_MEMBERS or len(members) != len(KERAS_MEMBERS):
            raise UnsafeArtifact(
                f"{MODEL_FILE} holds {sorted(names)}, expected exactly {sorted(KERAS_MEMBERS)}"
            )
        unpacked = sum(member.file_size for member in members)
        if unpacked > max_bytes:
            raise UnsafeArtifact(f"{MODEL_FILE} unpacks to {unpacked} bytes, more than {max_bytes}")
        if archive.getinfo("config.json").file_size > MAX_JSON_BYTES:
            raise UnsafeArtifact(f"{MODEL_FILE} config.json is larger than {MAX_JSON_BYTES} bytes")
        try:
            config = json.loads(archive.read("config.json"))
        except ValueError as e:
            raise UnsafeArtifact(f"{MODEL_FILE} config.json is not JSON: {e}") from e
    if not isinstance(config, dict):
        raise UnsafeArtifact(f"{MODEL_FILE} config.json does not hold an object")
    check_config(config)


def check_config(config: dict[str, Any]) -> None:
    """Walk a Keras model config; refuse any object outside Keras' safe public classes."""
    body = {key: value for key, value in config.items() if key != "compile_config"}
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                _check_object(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_object(node: dict[str, Any]) -> None:
    class_name = node.get("class_name")
    module = node.get("module")
    if class_name in _INTERNAL_CLASSES and module is None:
        return
    where = f"{module}.{class_name}"
    if not isinstance(class_name, str) or not _CLASS_NAME.match(class_name):
        raise UnsafeArtifact(f"{MODEL_FILE} names {where}, which is not a Keras class")
    if class_name in REFUSED_CLASSES:
        raise UnsafeArtifact(f"{MODEL_FILE} holds a {class_name} layer, which runs arbitrary code")
    if module not in ALLOWED_MODULES:
        raise UnsafeArtifact(f"{MODEL_FILE} names {where}, outside Keras' public layer modules")
    registered = node.get("registered_name")
    if registered not in (None, class_name):
        raise UnsafeArtifact(f"{MODEL_FILE} names a custom registered object {registered!r}")
