"""``whalecast run --shards N``: N daemon processes on one machine, one shard each.

One Python process runs one event loop on one core; a machine with more cores runs
more shards. Each child is a plain ``whalecast run`` with its shard in the
environment, exactly as a StatefulSet's pods or a systemd template unit's instances
would get it (``WHALECAST_SHARD__INDEX`` / ``__COUNT``), so the children share one
Redis and split the series by rendezvous hashing like any other replicas. With a
fixed metrics port, shard ``i`` serves ``/metrics`` on ``port + i``.

The parent only starts, watches and stops them:

- SIGTERM or SIGINT is passed on to every child, which drains its bar and exits; the
  parent exits 0 when all of them did, and kills what is still running after
  ``stop_timeout_seconds``.
- A child that exits on its own (a crash, a bad config) stops the others and the
  parent exits with the child's status: the service manager restarts the whole set
  (systemd's ``Restart=on-failure``, a container's restart policy), and a shard is
  never left down unnoticed while the others run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from whalecast.logs import get_logger

log = get_logger(__name__)

POLL_SECONDS = 0.1
STOP_MARGIN_SECONDS = 10.0  # beyond a child's drain (inference.shutdown_grace_seconds)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def shard_environment(
    base: Mapping[str, str], index: int, count: int, metrics_port: int
) -> dict[str, str]:
    """The environment of shard ``index`` of ``count``: the parent's, plus its shard."""
    env = dict(base)
    env["WHALECAST_SHARD__INDEX"] = str(index)
    env["WHALECAST_SHARD__COUNT"] = str(count)
    env["WHALECAST_SHARD__INDEX_FROM_HOSTNAME"] = "false"
    if metrics_port:  # 0 means any free port: each child picks its own
        env["WHALECAST_METRICS__PORT"] = str(metrics_port + index)
    return env


def exit_status(codes: Sequence[int | None], stop_requested: bool) -> int:
    """The parent's status from its children's: 0 only for a requested, clean stop.

    ``None`` is a child killed after the stop timeout. A child's own exit (not
    requested) is a failure even with status 0: a daemon does not end by itself.
    """
    failed = [c for c in codes if c != 0]
    if not failed:
        return 0 if stop_requested else 1
    worst = failed[0]
    if worst is None:
        return 1
    return worst if worst > 0 else 128 - worst  # a signal -N is reported as 128 + N


@dataclass
class Supervisor:
    """Starts ``count`` children of ``argv``, watches them, stops them together."""

    argv: Sequence[str]
    count: int
    metrics_port: int
    stop_timeout_seconds: float
    environ: Mapping[str, str]
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()  # children killed after the stop timeout
        self.stop_requested = False

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in FORWARDED_SIGNALS}
        try:
            self._start_all()
            first = self._wait_for_first_exit()
            if first is not None and not self.stop_requested:
                log.error("shard exited on its own, stopping the others",
                          shard=first, status=self.children[first].returncode)  # fmt: skip
            self._stop_all()
            codes = self.statuses()
            status = exit_status(codes, self.stop_requested)
            log.info("shards stopped", statuses=codes, status=status)
            return status
        finally:
            self._kill_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def statuses(self) -> list[int | None]:
        """Each child's exit status; ``None`` for one killed after the stop timeout."""
        return [
            None if index in self.killed else child.returncode
            for index, child in enumerate(self.children)
        ]

    def _start_all(self) -> None:
        for index in range(self.count):
            env = shard_environment(self.environ, index, self.count, self.metrics_port)
            child = subprocess.Popen(list(self.argv), env=env, stdin=subprocess.DEVNULL)
            self.children.append(child)
            log.info("shard started", shard=index, shards=self.count, pid=child.pid,
                     metrics_port=env.get("WHALECAST_METRICS__PORT", "any"))  # fmt: skip

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop_requested:
            log.info("stopping shards", signal=signal.Signals(signum).name)
        self.stop_requested = True
        self._send(signal.SIGTERM)

    def _send(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(sig)

    def _wait_for_first_exit(self) -> int | None:
        while not self.stop_requested:
            for index, child in enumerate(self.children):
                if child.poll() is not None:
                    return index
            time.sleep(POLL_SECONDS)
        return None

    def _stop_all(self) -> None:
        self._send(signal.SIGTERM)
        deadline = self.clock() + self.stop_timeout_seconds
        while any(child.poll() is None for child in self.children):
            if self.clock() > deadline:
                log.error("shards did not stop in time, killing them",
                          timeout_seconds=self.stop_timeout_seconds)  # fmt: skip
                self._kill_all()
                return
            time.sleep(POLL_SECONDS)

    def _kill_all(self) -> None:
        for index, child in enumerate(self.children):
            if child.poll() is None:
                child.kill()
                child.wait()
                self.killed.add(index)


def run_shards(
    config: str | None, count: int, metrics_port: int, stop_timeout_seconds: float
) -> int:
    """``whalecast run --shards count``: the children run ``whalecast run`` on ``config``."""
    argv = [sys.executable, "-m", "whalecast", "run"]
    if config is not None:
        argv += ["--config", config]
    supervisor = Supervisor(argv, count, metrics_port, stop_timeout_seconds, dict(os.environ))
    return supervisor.run()
