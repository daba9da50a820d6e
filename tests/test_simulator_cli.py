"""``whalecast simulate`` as a separate process: URLs printed, klines served, SIGTERM → exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from testkit.redis_servers import free_port
from whalecast.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_simulate_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "whalecast", "simulate", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in (
        "--data",
        "--synthetic",
        "--bar-seconds",
        "--history-bars",
        "--port",
        "--no-whale",
    ):
        assert option in result.stdout


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, object]) -> object:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_simulate_process_serves_klines_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "whalecast", "simulate", "--port", str(port), "--manual",
               "--history-bars", "30"]  # fmt: skip
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log, subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "WHALECAST_LOG__FORMAT": "json"},
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            banner = []
            for line in process.stdout:
                banner.append(line)
                if line.startswith("# and the key"):
                    break
            text = "".join(banner)
            snippet = text.split("config:\n", 1)[1]
            settings = load_settings(_write(tmp_path / "sim.yml", snippet))
            assert settings.exchanges[0].rest_url == f"http://127.0.0.1:{port}/api/v3"
            assert settings.whale.enabled and settings.feed.clock == "replay"
            rest_url = f"http://127.0.0.1:{port}/api/v3"
            assert rest_url in text and f"ws://127.0.0.1:{port}/stream" in text, (
                log_path.read_text()
            )
            rows = _get(f"{rest_url}/klines?symbol=BTCUSDT&interval=1h&limit=1000")
            assert isinstance(rows, list) and len(rows) == 31  # 30 closed + the forming bar
            state = _post(f"http://127.0.0.1:{port}/_sim/advance", {"bars": 2})
            assert isinstance(state, dict) and state["played"] == 2
            rows = _get(f"{rest_url}/klines?symbol=BTCUSDT&interval=1h&limit=1000")
            assert isinstance(rows, list) and len(rows) == 33
            assert rows[-1][0] == state["now_ms"]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
