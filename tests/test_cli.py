"""The command line: fast help, check-config output and exit codes."""

from __future__ import annotations

import os
import socket
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


def test_training_commands_name_the_missing_extra_in_a_serving_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'tf2onnx'):\n"
        "    sys.modules[name] = None  # as if not installed: importing it fails\n"
        "from whalecast import cli\n"
        f"sys.exit(cli.main(['export-onnx', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "export-onnx needs" in result.stderr and "whalecast[train]" in result.stderr


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


def check_config_problems(tmp_path: Path, text: str) -> list[str]:
    """check-config on ``text``: exit 2 and the problem lines, as an operator sees them."""
    config = tmp_path / "c.yml"
    config.write_text(text)
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    head, *problems = result.stderr.strip().splitlines()
    assert head == f"whalecast: invalid configuration ({len(problems)} problem(s)):", head
    return problems


def test_check_config_names_exchange_symbol_and_timeframe_mistakes(tmp_path: Path) -> None:
    problems = check_config_problems(tmp_path, """\
exchanges:
  - {id: nosuchex, symbols: [BTC/USDT], timeframe: 1h}
  - {id: binanse, symbols: [BTC/USDT], timeframe: 1h}
  - {id: bitbank, symbols: [BTC/JPY], timeframe: 1h}
  - {id: coinbase, symbols: [BTC/USD], timeframe: 1h}
  - {id: binance, symbols: [btc/usdt, ETH/USDT], timeframe: 2m}
inference: {registry: .}
metrics: {port: 0}
""")  # fmt: skip
    assert problems == [
        "  exchanges.0.id: 'nosuchex' is not an exchange with a ccxt websocket (ccxt.pro) client",
        "  exchanges.1.id: 'binanse' is not an exchange with a ccxt websocket (ccxt.pro) client; "
        "did you mean binance, binanceus?",
        "  exchanges.2.id: 'bitbank' has only a REST client in ccxt, no websocket one",
        "  exchanges.3.id: 'coinbase' has no websocket OHLCV (watchOHLCV) in ccxt",
        "  exchanges.4.symbols.0: 'btc/usdt' is not a unified symbol like 'BTC/USDT' "
        "(upper-case BASE/QUOTE, ccxt's names, not the exchange's market id)",
        "  exchanges.4.timeframe: binance does not offer '2m' "
        "(ccxt lists 1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w, 1M)",
    ]


def test_check_config_names_an_unreadable_registry_and_a_taken_port(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.write_text("not a directory")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problems = check_config_problems(
            tmp_path, f"inference: {{registry: {registry}}}\nmetrics: {{port: {port}}}\n"
        )
    assert problems == [
        f"  inference.registry: {registry} is not a directory",
        f"  metrics.port: {port} on 127.0.0.1 is already in use",
    ]


def test_check_config_notes_a_registry_not_made_yet(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(f"inference: {{registry: {tmp_path / 'models'}}}\nmetrics: {{port: 0}}\n")
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"note:  inference.registry: {tmp_path / 'models'} does not exist yet: train a model "
        "into it with 'whalecast train', or try 'whalecast demo'",
        "configuration OK (1 exchange(s), 2 series)",
    ]
