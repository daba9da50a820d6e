"""The served-model set: one runtime per configured model, hot reload, expiry.

- :meth:`ModelSet.load_all` loads each model's ``CURRENT`` version at start-up.
- :class:`inference.model_watch.ModelWatcher` (a task) reacts to ``<prefix>:models``
  notices and polls; :meth:`ModelSet.check` loads a new version in a worker thread (the event loop keeps running), checked
  (:class:`~inference.runtime.ModelRuntime` refuses what it must), and parked.
- The bar loop calls :meth:`ModelSet.swap_pending` between bars: only there does
  a parked version replace the serving one, so one bar never mixes versions. A
  parked version waits in :meth:`ModelSet.parked` first (the daemon primes its
  recurrent states, so its first bar steps like the old version's would have).
- A refused version is logged (model, version, reason), counted
  (``whalecast_model_reloads_total{outcome="refused"}``), flagged
  (``whalecast_model_reload_failing``) and never retried; the old version keeps
  serving. Unexpected load errors are counted the same way but retried at the
  next poll.
- Expiry: a version trained more than ``expiry_hours`` ago sets
  ``whalecast_model_expired`` and logs a warning once; with
  ``stop_serving_expired`` it is left out of :meth:`ModelSet.serving`.

With ``registry_sync: redis`` the wanted version is the one Redis names, fetched
into the local registry first (:mod:`whalecast.artifact_sync`).

The daemon freezes its heap once the models are loaded; a swap lets the replaced
version out of it (:mod:`inference.heap`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inference.heap import FrozenHeap
from inference.runtime import ModelRefused, ModelRuntime
from streamer.features import FEATURE_NAMES, FEATURE_VERSION
from whalecast.artifact import read_current
from whalecast.artifact_sync import SyncError, remote_current, sync_current
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.settings import InferenceSettings

log = get_logger(__name__)

HOW_TO_GET_A_MODEL = (
    "train one into inference.registry with 'whalecast train' ('whalecast train --quick': "
    "small models from the shipped data in a few minutes), or watch the whole path with "
    "'whalecast demo'; a model trained later is picked up without a restart"
)


class ModelSet:
    def __init__(
        self,
        settings: InferenceSettings,
        metrics: Metrics,
        *,
        registry: Path | None = None,
        feature_names: Sequence[str] = FEATURE_NAMES,
        feature_version: int = FEATURE_VERSION,
        full_window: int | None = None,
        redis: Any = None,
        keys: Keys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.registry_sync == "redis" and redis is None:
            raise ValueError("inference.registry_sync: redis needs a Redis client")
        self.settings = settings
        self.metrics = metrics
        self.registry = Path(registry if registry is not None else settings.registry)
        self.feature_names = tuple(feature_names)
        self.feature_version = feature_version
        self.full_window = full_window
        self.redis = redis
        self.keys = keys or Keys()
        self.clock = clock
        self._serving: dict[str, ModelRuntime] = {}
        self._pending: dict[str, ModelRuntime] = {}
        self._refused: dict[str, set[str]] = {name: set() for name in settings.models}
        self._locks = {name: asyncio.Lock() for name in settings.models}
        self._expired_logged: set[tuple[str, str]] = set()
        self._heap = FrozenHeap()  # lets a replaced version out of a frozen heap
        self._unprimed: dict[str, ModelRuntime] = {}  # parked, not yet handed to parked()
        self._parked = asyncio.Event()
        #: each model's last refused version and why (shown on the web page's models table)
        self.last_refusal: dict[str, tuple[str, str]] = {}

    # --- what the bar loop uses -------------------------------------------------------------

    def serving(self) -> dict[str, ModelRuntime]:
        """The runtimes to predict with now (expired ones left out if so configured)."""
        now = self.clock()
        out: dict[str, ModelRuntime] = {}
        for model, runtime in self._serving.items():
            expired = self._check_expiry(runtime, now)
            if not (expired and self.settings.stop_serving_expired):
                out[model] = runtime
        return out

    def swap_pending(self) -> list[str]:
        """Install parked versions; call only between bars. Returns the models swapped."""
        self._heap.bar_started()
        swapped = list(self._pending)
        for model in swapped:
            self._install(self._pending.pop(model))
        return swapped

    @property
    def ready(self) -> bool:
        """Every configured model has a version in service."""
        return all(model in self._serving for model in self.settings.models)

    def runtime(self, model: str) -> ModelRuntime | None:
        return self._serving.get(model)

    # --- loading ----------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every configured model's current version and serve it at once (start-up)."""
        await asyncio.gather(*(self.check(model, "start-up") for model in self.settings.models))
        self.swap_pending()
        missing = [m for m in self.settings.models if m not in self._serving]
        if missing:
            log.error("models not in service, predicting nothing for them", models=missing,
                      registry=self.describe_registry(), how_to_get_one=HOW_TO_GET_A_MODEL)  # fmt: skip

    def describe_registry(self) -> str:
        """Where the versions were looked for, as the log and /readyz name it."""
        if self.settings.registry_sync == "redis":
            return f"{self.registry} (synced from Redis {self.keys.artifact_current('<model>')})"
        return str(self.registry.resolve())

    async def check(self, model: str, cause: str = "poll") -> None:
        """Load the wanted version of ``model`` if it is new; it is parked for the next swap."""
        if model not in self._locks:
            return
        async with self._locks[model]:
            version = await self._wanted_version(model)
            if version is None or version in self._refused[model]:
                return
            known = self._pending.get(model) or self._serving.get(model)
            if known is not None and known.version == version:
                self.metrics.model_reload_failing.labels(model).set(0)  # e.g. rolled back
                return
            await self._load(model, version, cause)

    async def _wanted_version(self, model: str) -> str | None:
        if self.settings.registry_sync == "redis":
            try:
                return await sync_current(self.redis, self.keys, self.registry, model)
            except SyncError as e:
                version = await self._remote_version(model)
                self._refuse(model, version or "unknown", str(e), permanent=version is not None)
                return None
        return read_current(self.registry, model)

    async def _remote_version(self, model: str) -> str | None:
        return await remote_current(self.redis, self.keys, model)

    async def _load(self, model: str, version: str, cause: str) -> None:
        started = time.monotonic()
        try:
            runtime = await asyncio.to_thread(
                ModelRuntime.load,
                self.registry, model, version, self.settings.backend,
                feature_names=self.feature_names, feature_version=self.feature_version,
                full_window=self.full_window, batch_buckets=self.settings.batch_buckets,
                incremental=self.settings.incremental,
            )  # fmt: skip
        except ModelRefused as e:
            self._refuse(model, version, e.reason, permanent=True)
            return
        except Exception as e:  # noqa: BLE001 - one load is a boundary: the old model keeps serving
            self._refuse(model, version, f"{type(e).__name__}: {e}", permanent=False)
            return
        self._pending[model] = runtime
        self._unprimed[model] = runtime
        self._parked.set()
        self.metrics.model_reloads.labels(model, "loaded").inc()
        self.metrics.model_reload_failing.labels(model).set(0)
        log.info(
            "model version loaded, swapping in at the next bar boundary",
            cause=cause, seconds=round(time.monotonic() - started, 3), **runtime.describe(),
        )  # fmt: skip

    def _refuse(self, model: str, version: str, reason: str, permanent: bool) -> None:
        if permanent:
            self._refused[model].add(version)
        self.last_refusal[model] = (version, reason)
        self.metrics.model_reloads.labels(model, "refused").inc()
        self.metrics.model_reload_failing.labels(model).set(1)
        serving = self._serving.get(model)
        log.error(
            "model version refused",
            model=model, version=version, reason=reason, retried=not permanent,
            still_serving=serving.version if serving else None,
        )  # fmt: skip

    async def parked(self) -> dict[str, ModelRuntime]:
        """Wait for versions parked for the next swap and not handed out yet (by model).

        A version swapped in before anyone asked is left out: it serves already.
        """
        while not self._unprimed:
            self._parked.clear()
            await self._parked.wait()
        return self.take_parked()

    def take_parked(self) -> dict[str, ModelRuntime]:
        """:meth:`parked` without waiting: {} when there is none."""
        parked, self._unprimed = self._unprimed, {}
        return parked

    def _install(self, runtime: ModelRuntime) -> None:
        self._unprimed.pop(runtime.model, None)
        old = self._serving.get(runtime.model)
        if old is not None:
            self.metrics.model_info.remove(old.model, old.version, old.backend_name)
            self._heap.replaced(old)
        self._serving[runtime.model] = runtime
        self.metrics.model_info.labels(runtime.model, runtime.version, runtime.backend_name).set(1)
        self.metrics.model_loaded.labels(runtime.model).set(runtime.loaded_at)
        self.metrics.model_trained.labels(runtime.model).set(runtime.trained_at.timestamp())
        self._check_expiry(runtime, self.clock())
        log.info(
            "model version in service",
            model=runtime.model, version=runtime.version,
            replaced=old.version if old else None, backend=runtime.backend_name,
        )  # fmt: skip

    def _check_expiry(self, runtime: ModelRuntime, now: float) -> bool:
        age_hours = (now - runtime.trained_at.timestamp()) / 3600.0
        expired = age_hours > self.settings.expiry_hours
        self.metrics.model_expired.labels(runtime.model).set(1 if expired else 0)
        key = (runtime.model, runtime.version)
        if expired and key not in self._expired_logged:
            self._expired_logged.add(key)
            log.warning(
                "model version expired",
                model=runtime.model, version=runtime.version, age_hours=round(age_hours, 1),
                expiry_hours=self.settings.expiry_hours,
                serving=not self.settings.stop_serving_expired,
            )  # fmt: skip
        return expired
