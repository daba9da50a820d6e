"""deploy/prometheus and deploy/grafana: promtool accepts the configuration and rules,
the rule unit tests pass, and every metric name an alert or a dashboard panel uses
exists in a real scrape of ``/metrics``.

The scrape comes from the ``metrics_scrape_text`` fixture: a real HTTP scrape of a
running daemon (simulator, real redis-server, tiny models) that is warm and has
predicted a few bars. A name counts as exported only when the scrape carries a sample
of it, so a labelled family that no code path has touched yet does not pass.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from testkit.daemon import scrape_running_daemon
from testkit.redis_servers import RedisServer, require_tool

pytestmark = pytest.mark.deploy


def _daemon_marks(test: Any) -> Any:
    """Tests reading the scrape run a daemon (real redis-server, TensorFlow)."""
    return pytest.mark.redis(pytest.mark.tf(pytest.mark.slow(test)))


ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "whalecast.json"
# series Prometheus itself adds to every target, not exported by whalecast
SYNTHETIC_SERIES = {"up"}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "bool", "inf", "nan",
}  # fmt: skip


@pytest.fixture(scope="module")
def metrics_scrape_text(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The text of a real HTTP scrape of a running daemon's ``/metrics``."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    registry = tmp_path_factory.mktemp("scrape") / "registry"
    return asyncio.run(scrape_running_daemon(redis_server.url, registry))


def exported_series_names(scrape_text: str) -> set[str]:
    """Every series name the exposition carries a sample of."""
    return {
        sample.name
        for family in text_string_to_metric_families(scrape_text)
        for sample in family.samples
    }


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana ``label_values(...)`` query)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.S)
    if match:
        expr = match.group(1)
    elif re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", expr):
        return set()
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for token in re.finditer(r"\d[\w.]*|[A-Za-z_:][\w:]*", text):
        word = token.group()
        if word[0].isdigit() or word.lower() in PROMQL_WORDS:
            continue
        if text[token.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(word)
    return names


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        queries += [target["expr"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def _unknown(names: set[str], exported: set[str], recorded: set[str]) -> set[str]:
    return {n for n in names if n not in exported | recorded | SYNTHETIC_SERIES}


def _promtool(*args: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    _promtool("check", "config", "prometheus.yml")


def test_promtool_check_rules() -> None:
    _promtool("check", "rules", "alerts.yml")


def test_promtool_rule_unit_tests() -> None:
    _promtool("test", "rules", "alerts_test.yml", "alerts_test_weekly.yml")


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    fired: set[str] = set()
    quiet: set[str] = set()
    for name in ("alerts_test.yml", "alerts_test_weekly.yml"):
        for test in yaml.safe_load((PROMETHEUS / name).read_text())["tests"]:
            for case in test["alert_rule_test"]:
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fired == alerts
    assert quiet == alerts


def test_every_alert_has_summary_description_and_runbook() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) >= 7
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for rule in alerts:
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{rule['alert']} has no {key}"
        anchor = annotations["runbook_url"].rsplit("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in guide, f"docs/deploy.md has no runbook for {rule['alert']}"
        assert rule["labels"]["severity"] in {"critical", "warning"}


@_daemon_marks
def test_scrape_declares_the_kernel_metrics(metrics_scrape_text: str) -> None:
    exported = exported_series_names(metrics_scrape_text)
    assert "whalecast_bar_latency_seconds_bucket" in exported
    assert "whalecast_predictions_published_total" in exported
    assert "process_resident_memory_bytes" in exported


@_daemon_marks
def test_alert_rules_use_only_exported_metrics(metrics_scrape_text: str) -> None:
    exported = exported_series_names(metrics_scrape_text)
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used: set[str] = set()
    for rule in _rules():
        used |= promql_metric_names(rule["expr"])
    assert len(used) >= 10, used
    assert not _unknown(used, exported, recorded)


@_daemon_marks
def test_dashboard_uses_only_exported_metrics(metrics_scrape_text: str) -> None:
    exported = exported_series_names(metrics_scrape_text)
    used: set[str] = set()
    for query in _dashboard_queries():
        used |= promql_metric_names(query)
    assert len(used) >= 25, used
    assert not _unknown(used, exported, recorded=set())


@_daemon_marks
def test_metric_name_check_can_fail(metrics_scrape_text: str) -> None:
    exported = exported_series_names(metrics_scrape_text)
    expr = (
        'histogram_quantile(0.99, sum by (le, timeframe) (rate(whalecast_bar_latency_seconds_bucket{job=~"w.*"}[1h])))'
        " > on (timeframe) group_left () whalecast_no_such_metric + 2e3 * time() - offset_of_bars offset 5m"
    )
    names = promql_metric_names(expr)
    assert names == {
        "whalecast_bar_latency_seconds_bucket", "whalecast_no_such_metric", "offset_of_bars",
    }  # fmt: skip
    assert _unknown(names, exported, set()) == {"whalecast_no_such_metric", "offset_of_bars"}
    assert promql_metric_names('label_values(whalecast_model_info{a="$b"}, model)') == {
        "whalecast_model_info"
    }
    # a counter is exported as <name>_total, a histogram as _bucket/_sum/_count only
    assert "whalecast_predictions_published" not in exported
    assert "whalecast_bar_latency_seconds" not in exported


def test_dashboard_is_templated() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"exchange", "timeframe", "model"} <= variables.keys()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    queries = " ".join(_dashboard_queries())
    for variable in ("$exchange", "$timeframe", "$model"):
        assert variable in queries
    for needed in (
        "histogram_quantile(0.99, sum by (timeframe, le) (rate(whalecast_bar_latency_seconds_bucket",
        "whalecast_inference_seconds_bucket", "whalecast_inference_batch_size_sum",
        "whalecast_model_info", "process_resident_memory_bytes",
        "whalecast_live_accuracy_ratio", "whalecast_live_log_volume_mae",
        "whalecast_live_quantile_coverage_ratio", "whalecast_live_log_volume_pinball",
        "whalecast_live_direction_brier", "whalecast_live_direction_hit_ratio",
        "whalecast_backfill_bars_total", "whalecast_feed_connected",
    ):  # fmt: skip
        assert needed in queries, needed
