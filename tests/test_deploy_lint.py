"""The deployment files pass the real linters and validators: hadolint (Dockerfile),
the Compose Specification schema (no Docker engine runs here, so the compose file is
validated, never run), yamllint, shellcheck, ``systemd-analyze verify`` and
``systemd-analyze security``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from testkit.redis_servers import require_tool
from tests.deploy_sources import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    ROOT,
    compose,
    dockerfile_instructions,
    systemd_units,
    venv_tool,
)

pytestmark = pytest.mark.deploy

# ExecStart's binary lives in the install location (/opt/whalecast/bin/whalecast), which
# this machine does not have: verify copies of the units pointing at a real executable.
INSTALLED_BINARY = "/opt/whalecast/bin/whalecast"
MAX_EXPOSURE = 2.0


def _run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_hadolint_passes() -> None:
    result = _run([venv_tool("hadolint"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    stages = [args for word, args in instructions if word == "FROM"]
    assert len(stages) == 2, "a builder and a runtime stage"
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    runtime = instructions[last_from:]
    runtime_words = [w for w, _ in runtime]
    run_lines = " ".join(args for word, args in runtime if word == "RUN")
    assert "build-essential" not in run_lines and "gcc" not in run_lines
    assert "redis-server" not in " ".join(args for _, args in instructions)
    user = [args for word, args in runtime if word == "USER"]
    assert user and not user[-1].startswith(("0", "root"))
    assert "HEALTHCHECK" in runtime_words
    assert not any(word == "COPY" and "config" in args for word, args in runtime)
    build_args = [args for word, args in instructions if word == "ARG"]
    assert "VARIANT=cpu" in build_args


def test_dockerignore_sends_only_the_package() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert {"pyproject.toml", pyproject["project"]["readme"]} | packages <= allowed
    assert not {"deploy", "config.yml", "tests", ".git"} & allowed
    assert "**/secrets" in lines


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    checker = venv_tool("check-jsonschema")
    schema = ["--builtin-schema", "vendor.compose-spec"]
    result = _run([checker, *schema, str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text(encoding="utf-8").replace("      interval: 5s", "      intervall: 5s")
    broken.write_text(text, encoding="utf-8")
    assert _run([checker, *schema, str(broken)]).returncode != 0


def test_compose_references_exist() -> None:
    data = compose()
    base = COMPOSE.parent
    for section in ("configs", "secrets"):
        for name, entry in data.get(section, {}).items():
            assert (base / entry["file"]).is_file(), f"{section}.{name}: {entry['file']}"
    for name, service in data["services"].items():
        if "build" in service:
            context = base / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (base / source).exists(), f"{name}: {source}"
            else:
                assert source in data["volumes"], f"{name}: volume {source} is not declared"
        for secret in service.get("secrets", []):
            assert secret in data["secrets"], f"{name}: secret {secret}"
    whalecast = data["services"]["whalecast"]
    assert whalecast["read_only"] is True
    assert "redis_password" in whalecast["secrets"]
    for trainer in ("trainer-direction", "trainer-volume"):
        assert set(whalecast["volumes"]) <= set(
            data["services"][trainer]["volumes"]
        )  # the registry


def test_yamllint_passes() -> None:
    config = DEPLOY / "yamllint.yml"
    result = _run([sys.executable, "-m", "yamllint", "--strict", "-c", str(config), str(DEPLOY)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes() -> None:
    scripts = sorted(DEPLOY.rglob("*.sh")) + sorted((ROOT / "scripts").glob("*.sh"))
    assert scripts
    # -x: the container scripts source scripts/podman-env.sh (paths from the root)
    result = _run([require_tool("shellcheck"), "-x", *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def installed_units(tmp_path: Path) -> Path:
    binary = tmp_path / "whalecast"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    for unit in systemd_units():
        text = unit.read_text(encoding="utf-8")
        (tmp_path / unit.name).write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return tmp_path


def test_units_run_the_installed_binary() -> None:
    for unit in systemd_units():
        for line in unit.read_text(encoding="utf-8").splitlines():
            if line.startswith("ExecStart="):
                assert line.split()[0] == f"ExecStart={INSTALLED_BINARY}", line


def test_systemd_analyze_verify(installed_units: Path) -> None:
    analyze = require_tool("systemd-analyze")
    units = sorted(p.name for p in installed_units.iterdir() if p.suffix in {".service", ".timer"})
    assert len(units) == 4
    result = _run([analyze, "verify", *(f"./{u}" for u in units)], cwd=installed_units)
    output = result.stdout + result.stderr
    complaints = [
        line for line in output.splitlines() if str(installed_units) in line or "whalecast" in line
    ]
    assert result.returncode == 0 and not complaints, output


def test_systemd_verify_reports_a_bad_key(installed_units: Path) -> None:
    analyze = require_tool("systemd-analyze")
    unit = installed_units / "whalecast.service"
    unit.write_text(unit.read_text().replace("[Service]\n", "[Service]\nProtectSystm=strict\n"))
    result = _run([analyze, "verify", "./whalecast.service"], cwd=installed_units)
    assert "ProtectSystm" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "unit", ["whalecast.service", "whalecast-train.service", "whalecast-ui.service"]
)
def test_units_are_hardened(installed_units: Path, unit: str) -> None:
    analyze = require_tool("systemd-analyze")
    result = _run(
        [analyze, "security", "--offline=true", "--no-pager", f"./{unit}"], cwd=installed_units
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    text = (installed_units / unit).read_text()
    for line in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ):
        assert line in text, line
    assert "LoadCredential=redis_password:" in text


def test_timer_starts_the_trainer() -> None:
    timer = (DEPLOY / "systemd" / "whalecast-train.timer").read_text(encoding="utf-8")
    assert "Unit=whalecast-train.service" in timer
    assert "Persistent=true" in timer
    calendar = re.search(r"^OnCalendar=(.+)$", timer, re.M)
    assert calendar
    if shutil.which("systemd-analyze"):
        result = _run(["systemd-analyze", "calendar", calendar.group(1)])
        assert result.returncode == 0, result.stderr
        assert "Normalized form: *-*-* 00/6:05:00 UTC" in result.stdout, result.stdout
