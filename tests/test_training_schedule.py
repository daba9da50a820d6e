"""``whalecast train --every``: a long-running refresh process that SIGTERM stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.training]

ROOT = Path(__file__).resolve().parents[1]
CANDLES = str(ROOT / "streamer" / "data" / "binance_BTC-USDT_1h.csv.gz")


class Process:
    """A whalecast subprocess whose stdout and stderr lines are collected as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "whalecast", *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []

        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (the process is killed if it does not exit)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for pump in self.pumps:
                pump.join(5)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def wait_for(self, found: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            assert self.proc.poll() is None, "".join(self.err[-30:])
            assert time.monotonic() < deadline, "".join(self.err[-30:])
            time.sleep(0.2)

    def events(self) -> list[str]:
        names = []
        for line in self.err:
            try:
                names.append(json.loads(line)["event"])
            except (ValueError, KeyError):
                continue
        return names


def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(
        f"log: {{format: json}}\n"
        f"redis: {{url: 'redis://127.0.0.1:1/0', socket_timeout_seconds: 0.5}}\n"
        f"inference: {{registry: {tmp_path / 'models'}}}\n"
        "training: {test_days: 10, train_days: 20, bootstrap_samples: 20}\n"
    )
    return path


def test_refresh_runs_then_sigterm_between_runs_exits_zero(tmp_path: Path) -> None:
    p = Process("train", "-c", str(config(tmp_path)), "--preset", "volume", "--candles", CANDLES,
                "--epochs", "1", "--set", "units=2", "--force", "--every", "1h")  # fmt: skip
    try:
        p.wait_for(lambda: any(line.startswith('{"model"') for line in p.out))
    finally:
        code = p.stop()
    assert code == 0, "".join(p.err[-20:])
    version = json.loads(next(line for line in p.out if line.startswith('{"model"')))["version"]
    current = tmp_path / "models" / "volume" / "CURRENT"
    assert current.read_text().strip() == version
    assert "refresh_started" in p.events() and "refresh_stopped" in p.events()


def test_sigterm_during_a_fit_abandons_the_run_and_exits_zero(tmp_path: Path) -> None:
    p = Process("train", "-c", str(config(tmp_path)), "--preset", "volume", "--candles", CANDLES,
                "--epochs", "500", "--set", "units=2", "--every", "6h")  # fmt: skip
    try:
        p.wait_for(lambda: "epoch" in p.events())
    finally:
        code = p.stop()
    assert code == 0, "".join(p.err[-20:])
    assert not (tmp_path / "models" / "volume").exists()  # nothing written, nothing promoted
    assert "stop_requested" in p.events()
