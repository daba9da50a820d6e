"""The commands and settings the deployment files hand to whalecast really work:

- every ``whalecast ...`` command line in the Dockerfile, compose, systemd units,
  Kubernetes manifests and docs/deploy.md parses with the real CLI parser (a command
  whose subcommand is not on this branch yet is an expected failure, strict, so the
  check turns green by itself when the subcommand lands);
- the image's HEALTHCHECK one-liner passes against a live /healthz and fails otherwise;
- the compose Redis entry point starts a real redis-server that requires the password
  from the secret file and never shows it on its command line;
- every deployment config file and every WHALECAST_* variable loads with the real
  settings loader.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from pydantic import BaseModel

from testkit.redis_servers import free_port, require_tool
from tests.deploy_sources import (
    COMPOSE,
    DEPLOY,
    Invocation,
    compose,
    dockerfile_exec_form,
    environment_names,
    invocations,
)
from whalecast.cli import build_parser
from whalecast.settings import ENV_PREFIX, OWN_ENV, Settings, load_settings

pytestmark = pytest.mark.deploy

DEPLOY_CONFIGS = [
    DEPLOY / "compose" / "config.yml",
    DEPLOY / "k8s" / "base" / "config.yml",
    DEPLOY / "k8s" / "overlays" / "example" / "config.yml",
]


def _subcommands() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def _invocation_params() -> list[Any]:
    present = _subcommands()
    params = []
    for invocation in invocations():
        marks = []
        if invocation.argv[0] not in present:
            reason = f"subcommand {invocation.argv[0]!r} is not on this branch yet"
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(invocation, marks=marks, id=invocation.id))
    return params


def test_the_image_runs_whalecast() -> None:
    assert dockerfile_exec_form("ENTRYPOINT") == ["whalecast"]
    assert dockerfile_exec_form("CMD") == ["run"]
    sources = {i.source.split()[0] for i in invocations()}
    assert {"Dockerfile", "compose", "whalecast.service", "k8s"} <= sources, sources
    argvs = {i.argv for i in invocations()}
    assert ("train", "--preset", "direction", "--every", "6h") in argvs
    assert ("train", "--preset", "volume-wide", "--name", "volume", "--every", "6h") in argvs


@pytest.mark.parametrize("invocation", _invocation_params())
def test_command_line_parses(invocation: Invocation, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        args = build_parser().parse_args(list(invocation.argv))
    except SystemExit as e:
        pytest.fail(f"{invocation.id} does not parse: {capsys.readouterr().err.strip()} ({e})")
    assert args.command == invocation.argv[0]
    assert callable(args.handler)


class _HealthHandler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve(status: int) -> Iterator[int]:
    handler = type("Handler", (_HealthHandler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(port: int) -> int:
    argv = dockerfile_exec_form("HEALTHCHECK")
    assert argv[0] == "python"
    env = {"WHALECAST_METRICS__PORT": str(port), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    return result.returncode


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_one_liner(status: int, healthy: bool) -> None:
    with _serve(status) as port:
        assert (_run_healthcheck(port) == 0) is healthy


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert _run_healthcheck(free_port()) != 0


@pytest.fixture
def compose_redis(tmp_path: Path) -> Iterator[tuple[int, str, subprocess.Popen[bytes]]]:
    server_dir = str(Path(require_tool("redis-server")).parent)
    service = compose()["services"]["redis"]
    assert service["entrypoint"][0] == "sh"
    password = "s3cret-pa$$:w0rd!"
    (tmp_path / "redis_password").write_text(password + "\n")
    port = free_port()
    args = [a if a != "/data" else str(tmp_path) for a in service["command"]]
    argv = ["sh", str(COMPOSE.parent / "redis-entrypoint.sh"), *args,
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--logfile", "redis.log"]  # fmt: skip
    env = {
        "REDIS_PASSWORD_FILE": str(tmp_path / "redis_password"),
        "PATH": f"{server_dir}:/usr/bin:/bin",
    }
    process = subprocess.Popen(argv, env=env, cwd=tmp_path)
    try:
        yield port, password, process
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
        except redis.exceptions.AuthenticationError:
            return
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


def test_compose_redis_requires_the_secret_password(
    compose_redis: tuple[int, str, subprocess.Popen[bytes]],
) -> None:
    port, password, process = compose_redis
    _wait_for_port(port)
    with redis.Redis(port=port, password=password) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, password="wrong").ping()
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
    assert "redis-server" in cmdline
    assert password not in cmdline


def test_compose_redis_refuses_a_missing_password(tmp_path: Path) -> None:
    env = {"REDIS_PASSWORD_FILE": str(tmp_path / "absent"), "PATH": "/usr/bin:/bin"}
    script = str(COMPOSE.parent / "redis-entrypoint.sh")
    result = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot read the password file" in result.stderr


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _keys_not_in(data: dict[str, Any], model: type[BaseModel], where: str = "") -> list[str]:
    missing = []
    for key, value in data.items():
        if key not in model.model_fields:
            missing.append(f"{where}{key}")
            continue
        sub = _model_of(model.model_fields[key].annotation)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if sub is not None and isinstance(item, dict):
                missing += _keys_not_in(item, sub, f"{where}{key}.")
    return missing


def _config_params() -> list[Any]:
    params = []
    for path in DEPLOY_CONFIGS:
        missing = _keys_not_in(yaml.safe_load(path.read_text(encoding="utf-8")), Settings)
        marks = []
        if missing:
            reason = f"settings not on this branch yet: {', '.join(missing)}"
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(path, marks=marks, id=str(path.relative_to(DEPLOY))))
    return params


@pytest.mark.parametrize("path", _config_params())
def test_deployment_config_loads(path: Path) -> None:
    settings = load_settings(path)
    assert settings.redis.url.startswith("redis"), "deployments use a real Redis"
    assert settings.metrics.host == "0.0.0.0"
    assert str(settings.inference.registry) == "/var/lib/whalecast/models"
    assert str(settings.training.cache_dir) == "/var/lib/whalecast/history"


def test_every_environment_variable_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    names = environment_names()
    assert {"WHALECAST_SHARD__INDEX", "WHALECAST_INFERENCE__REGISTRY"} <= names.keys()
    for name in names:
        rest = name[len(ENV_PREFIX) :]
        if rest in OWN_ENV:
            continue
        section, _, key = rest.lower().partition("__")
        assert section in Settings.model_fields, name
        model = _model_of(Settings.model_fields[section].annotation)
        assert model is not None and key in model.model_fields, name
    for name, value in names.items():
        if value is not None and name[len(ENV_PREFIX) :] not in OWN_ENV:
            monkeypatch.setenv(name, value)
    load_settings(None)
