"""Model distribution through Redis, for replicas that share no filesystem.

The trainer (after promotion) calls :func:`publish_artifact`: the version's
files go into one hash ``<prefix>:artifact:<model>:<version>`` (file name ->
bytes), then ``<prefix>:artifact:<model>:CURRENT`` names it, then a notice
``{"model", "version"}`` goes to ``<prefix>:models``. A daemon configured with
``inference.registry_sync: redis`` calls :func:`sync_current` on a notice or a
poll: it fetches the version named there into its local registry (through
``write_artifact``, so a half-written version never appears) and points the
local ``CURRENT`` at it; loading and checking then happen as for any local
version. Artifacts are bounded (:data:`MAX_ARTIFACT_BYTES`); file names are
checked (no paths) before anything is written.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from whalecast.artifact import (
    ArtifactError,
    read_current,
    set_current,
    version_dir,
    write_artifact,
)
from whalecast.keys import Keys
from whalecast.logs import get_logger

log = get_logger(__name__)

MAX_ARTIFACT_BYTES = 50 * 1024 * 1024
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SyncError(Exception):
    """An artifact cannot be published or fetched (missing, too large, bad file names)."""


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_version_files(directory: Path, max_bytes: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.is_symlink() or not _FILE_NAME.match(path.name):
            raise SyncError(f"{path.name} in {directory} cannot be published (plain files only)")
        total += path.stat().st_size
        if total > max_bytes:
            raise SyncError(f"{directory} is larger than {max_bytes} bytes")
        files[path.name] = path.read_bytes()
    return files


async def publish_artifact(
    redis: Any,
    keys: Keys,
    registry: Path,
    model: str,
    version: str,
    *,
    notify: bool = True,
    max_bytes: int = MAX_ARTIFACT_BYTES,
) -> int:
    """Put a local version into Redis, name it current, announce it; returns bytes sent."""
    directory = version_dir(Path(registry), model, version)
    if not directory.is_dir():
        raise SyncError(f"no version {version} of {model} in {registry}")
    files = await asyncio.to_thread(read_version_files, directory, max_bytes)
    await redis.hset(keys.artifact(model, version), mapping=files)
    await redis.set(keys.artifact_current(model), version)
    if notify:
        await redis.publish(keys.models_channel, json.dumps({"model": model, "version": version}))
    size = sum(len(data) for data in files.values())
    log.info("artifact published to redis", model=model, version=version, bytes=size)
    return size


async def remote_current(redis: Any, keys: Keys, model: str) -> str | None:
    value = await redis.get(keys.artifact_current(model))
    return _decode(value) if value else None


async def fetch_artifact(
    redis: Any,
    keys: Keys,
    registry: Path,
    model: str,
    version: str,
    *,
    max_bytes: int = MAX_ARTIFACT_BYTES,
) -> Path:
    """Copy one version from Redis into the local registry (no-op when already there)."""
    try:
        final = version_dir(Path(registry), model, version)
    except ArtifactError as e:
        raise SyncError(str(e)) from e
    if final.is_dir():
        return final
    key = keys.artifact(model, version)
    names = [_decode(name) for name in await redis.hkeys(key)]
    if not names:
        raise SyncError(f"no artifact {model} {version} in Redis")
    bad = [name for name in names if not _FILE_NAME.match(name)]
    if bad:
        raise SyncError(f"artifact {model} {version} has unsafe file names {bad}")
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hstrlen(key, name)
    total = sum(await pipe.execute())
    if total > max_bytes:
        raise SyncError(f"artifact {model} {version} is {total} bytes, more than {max_bytes}")
    raw = await redis.hgetall(key)
    files = {_decode(name): bytes(data) for name, data in raw.items()}
    if set(files) != set(names):
        raise SyncError(f"artifact {model} {version} changed while being fetched")
    await asyncio.to_thread(_write_local, Path(registry), model, version, files)
    log.info("artifact fetched from redis", model=model, version=version, bytes=total)
    return final


def _write_local(registry: Path, model: str, version: str, files: dict[str, bytes]) -> None:
    def fill(directory: Path) -> None:
        for name, data in files.items():
            (directory / name).write_bytes(data)

    try:
        write_artifact(registry, model, fill, version=version)
    except ArtifactError as e:
        raise SyncError(str(e)) from e
    except OSError:
        if not version_dir(registry, model, version).is_dir():  # else: fetched concurrently
            raise


async def sync_current(
    redis: Any, keys: Keys, registry: Path, model: str, *, max_bytes: int = MAX_ARTIFACT_BYTES
) -> str | None:
    """Make the local registry's current version the one Redis names; returns it (or None)."""
    version = await remote_current(redis, keys, model)
    if version is None:
        return None
    await fetch_artifact(redis, keys, registry, model, version, max_bytes=max_bytes)
    if read_current(Path(registry), model) != version:
        set_current(Path(registry), model, version)
    return version
