"""Promotion: a new version goes into service only when it beats what is there.

The new model is compared, on the same test samples and by the configured metric, with
the version in service (re-scored on this run's test period, never taken from its old
report) and with the strong simple baseline. It is promoted when it beats both by more
than ``promote_min_improvement`` (only the serving one with ``promote_against_baseline:
false``), or with ``--force``. The decision uses point values; the report beside it
carries the paired intervals that say whether a difference is more than noise. Promotion rewrites
``<registry>/<model>/CURRENT`` atomically and then publishes ``{"model", "version"}`` on
``<prefix>:models``. If Redis cannot be reached the promotion still stands on disk (the
daemon also polls CURRENT) and a warning is logged.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.scoring import better
from whalecast.artifact import set_current
from whalecast.artifact_sync import publish_artifact
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.redisconn import EmbeddedRedis, RedisHandle, connect
from whalecast.settings import RedisSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Decision:
    promote: bool
    metric: str
    new: float
    baseline: float
    baseline_name: str
    serving: float | None
    serving_version: str | None
    forced: bool
    reason: str
    beats_baseline: bool = False  # by the rule's margin (and interval, when required)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _not_significant(name: str, new: float, other: float) -> str:
    return (
        f"not significantly better than {name} ({new:.5f} vs {other:.5f}; the paired "
        "95% interval of the difference includes zero)"
    )


def decide(
    metric: str,
    new: float,
    baseline: tuple[str, float],
    serving: tuple[str, float] | None,
    *,
    margin: float = 0.0,
    force: bool = False,
    against_baseline: bool = True,
    verdicts: dict[str, str] | None = None,
) -> Decision:
    """Promote only if ``new`` beats the baseline and the serving model (or when forced).

    With ``verdicts`` (the paired day-block bootstrap verdict of the model against each
    competitor, ``training.promote_requires_significance``), beating a competitor also
    needs its verdict to be "better": the 95 % interval of the difference excludes zero.
    """
    baseline_name, baseline_value = baseline
    serving_version, serving_value = serving if serving is not None else (None, None)
    failures = []
    point = better(metric, new, baseline_value, margin)
    beats = point and (verdicts is None or verdicts.get(baseline_name) == "better")
    if against_baseline and not point:
        failures.append(f"not better than {baseline_name} ({new:.5f} vs {baseline_value:.5f})")
    elif against_baseline and not beats:
        failures.append(_not_significant(baseline_name, new, baseline_value))
    if serving_value is not None and not better(metric, new, serving_value, margin):
        failures.append(
            f"not better than serving {serving_version} ({new:.5f} vs {serving_value:.5f})"
        )
    elif serving_value is not None and verdicts is not None and verdicts.get("serving") != "better":
        failures.append(_not_significant(f"serving {serving_version}", new, serving_value))
    if not failures:
        beaten = ([baseline_name] if against_baseline else []) + (
            [f"serving {serving_version}"] if serving_version else []
        )
        reason = f"better on {metric} than " + " and ".join(beaten) if beaten else "no gate"
        if not serving_version:
            reason += " (nothing in service)"
    elif force:
        reason = "forced: " + "; ".join(failures)
    else:
        reason = "; ".join(failures)
    return Decision(
        promote=force or not failures,
        metric=metric,
        new=new,
        baseline=baseline_value,
        baseline_name=baseline_name,
        serving=serving_value,
        serving_version=serving_version,
        forced=force and bool(failures),
        reason=reason,
        beats_baseline=beats,
    )


async def publish_notice(
    redis: RedisSettings, model: str, version: str, artifact_from: Path | None = None
) -> int:
    """``PUBLISH <prefix>:models {"model", "version"}``; returns the number of receivers.

    With ``artifact_from`` (a registry; ``inference.registry_sync: redis``) the version's
    files go into Redis first, so replicas without a shared filesystem can fetch them.
    With ``url: embedded`` the trainer does not start a server of its own: it publishes
    through the running daemon's socket in ``state_dir``, and there is nobody to tell
    when that socket is absent.
    """
    if redis.url == "embedded":
        embedded = EmbeddedRedis(redis.state_dir)
        if not embedded.socket_path.exists():
            raise ConnectionError(f"no embedded redis-server is running in {redis.state_dir}")
        client = connect(redis, embedded.url)
        try:
            return await _announce(client, Keys(redis.prefix), model, version, artifact_from)
        finally:
            await client.aclose()
    async with RedisHandle(redis) as client:
        return await _announce(client, Keys(redis.prefix), model, version, artifact_from)


async def _announce(
    client: Any, keys: Keys, model: str, version: str, artifact_from: Path | None
) -> int:
    if artifact_from is not None:
        await publish_artifact(client, keys, artifact_from, model, version, notify=False)
    message = json.dumps({"model": model, "version": version})
    return int(await client.publish(keys.models_channel, message))


def promote(
    registry: Path,
    model: str,
    version: str,
    redis: RedisSettings | None,
    sync_artifact: bool = False,
) -> bool:
    """Point CURRENT at ``version`` and announce it; ``True`` when the notice went out.

    ``sync_artifact`` (``inference.registry_sync: redis``) also puts the version's files
    into Redis before the notice.
    """
    set_current(registry, model, version)
    log.info("model_promoted", model=model, version=version, registry=str(registry))
    if redis is None:
        return False
    try:
        artifact_from = registry if sync_artifact else None
        receivers = asyncio.run(publish_notice(redis, model, version, artifact_from))
    except Exception as e:  # noqa: BLE001 - Redis down must not undo a promotion on disk
        log.warning(
            "model_notice_not_published",
            model=model,
            version=version,
            error=f"{type(e).__name__}: {e}",
            hint="the daemon picks the new CURRENT up on its next poll",
        )
        return False
    log.info("model_notice_published", model=model, version=version, receivers=receivers)
    return True
