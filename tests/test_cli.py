"""The command line: fast help, check-config output and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whalecast", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_help_is_fast_and_lists_commands() -> None:
    started = time.monotonic()
    result = run_cli("--help")
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    for command in ("check-config", "version"):
        assert command in result.stdout
    # a generous bound for a loaded CI machine; the point is "no TensorFlow import"
    assert elapsed < 3.0, elapsed


def test_help_does_not_import_heavy_parts() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from whalecast import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['--help'])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ccxt', 'pandas', 'redis') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_check_config_prints_masked_settings(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("redis:\n  password: s3cret-value\n")
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "s3cret-value" not in result.stdout + result.stderr
    assert '"password": "**********"' in result.stdout
    assert "configuration OK" in result.stderr


def test_check_config_shipped_file() -> None:
    result = run_cli("check-config", "--config", str(ROOT / "config.yml"))
    assert result.returncode == 0, result.stderr


def test_check_config_rejects_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("metrics:\n  prot: 1\n")
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2
    assert "metrics.prot" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("whalecast ")
