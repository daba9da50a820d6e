"""deploy/k8s: every rendered object validates against the Kubernetes schemas, and the
manifests keep the promises the deployment guide makes (probes, security, sizing,
model distribution, sharding).

The kustomizations are rendered by tests/kustomize_render.py (no kustomize binary here).
ServiceMonitor is a custom resource whose schema kubernetes-validate does not ship and
that cannot be fetched offline: it is validated against a strict schema of the fields
we use, written from the Prometheus Operator's v1 API.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.kustomize_render import Unsupported, pod_specs, render
from whalecast.settings import Settings, load_settings

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
TARGETS = ["base", "overlays/example", "overlays/sharded"]
# the oldest release with the pod-index label (sharding) and the newest schema shipped
KUBERNETES_VERSIONS = ["1.28.0", "1.37.0"]

Obj = dict[str, Any]

SERVICE_MONITOR_SCHEMA: Obj = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(K8S / request.param)


def _of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def _daemon_workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in {"Deployment", "StatefulSet"} and not _is_ui(o)]


def _is_ui(workload: Obj) -> bool:
    return bool(workload["metadata"]["labels"].get("app.kubernetes.io/component") == "ui")


def test_every_object_validates_strictly(rendered: tuple[str, list[Obj]]) -> None:
    target, objects = rendered
    assert len(objects) >= 8, target
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(_daemon_workloads(render(K8S / "base"))[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    monitor = copy.deepcopy(_of_kind(render(K8S / "base"), "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(Unsupported):
        render(tmp_path)


def test_pods_are_locked_down(rendered: tuple[str, list[Obj]]) -> None:
    target, objects = rendered
    specs = pod_specs(objects)
    trainers = len(_of_kind(objects, "CronJob"))
    assert len(specs) == 2 + trainers, target  # the daemon, the web page and the trainers
    assert trainers == (1 if target == "overlays/sharded" else 2), target  # indexed, or per model
    for spec in specs:
        # service links would inject WHALECAST_* variables the settings loader rejects
        assert spec["enableServiceLinks"] is False
        assert spec["automountServiceAccountToken"] is False
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] != 0
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            writable = ("/tmp",) if container["args"] == ["ui"] else ("/tmp", "/var/lib/whalecast/models")  # fmt: skip
            for path in writable:
                assert "emptyDir" in volumes[mounts[path]], path
            assert "requests" in container["resources"]
            assert "limits" in container["resources"]


def test_daemon_probes_and_sizing(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    (workload,) = _daemon_workloads(objects)
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9108}
    requests = container["resources"]["requests"]
    # FACTS: TensorFlow serving needs about one core and 1.5 GiB
    assert requests["cpu"] == "1"
    assert requests["memory"] == "1536Mi"


def test_the_web_page_is_a_read_only_workload_of_its_own(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    (ui,) = [o for o in _of_kind(objects, "Deployment") if _is_ui(o)]
    (container,) = ui["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["ui"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 9110}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "/var/lib/whalecast/models" not in {m["mountPath"] for m in container["volumeMounts"]}
    services = {s["metadata"]["name"]: s for s in _of_kind(objects, "Service")}
    service = services["whalecast-ui"]
    assert service["spec"]["type"] == "ClusterIP"
    pod_labels = ui["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # neither the metrics Service nor the disruption budget picks up the web page
    assert not services["whalecast-metrics"]["spec"]["selector"].items() <= pod_labels.items()
    (budget,) = _of_kind(objects, "PodDisruptionBudget")
    assert not budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_references_resolve_to_rendered_objects(rendered: tuple[str, list[Obj]]) -> None:
    target, objects = rendered
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for spec in pod_specs(objects):
        assert ("ServiceAccount", spec["serviceAccountName"]) in names
        for volume in spec["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names, target
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names, target
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert len(namespaces) == 1, namespaces


def test_metrics_service_and_monitor_select_the_daemon(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    (workload,) = _daemon_workloads(objects)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _of_kind(objects, "Service")}
    metrics = services["whalecast-metrics"]
    assert metrics["spec"]["selector"].items() <= pod_labels.items()
    assert workload["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (monitor,) = _of_kind(objects, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in metrics["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    (budget,) = _of_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_a_trainer_per_model_one_run_at_a_time() -> None:
    cronjobs = {c["metadata"]["name"]: c for c in _of_kind(render(K8S / "base"), "CronJob")}
    presets = {}
    for name, cronjob in cronjobs.items():
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = template["containers"]
        args = container["args"]
        assert args[:2] == ["train", "--preset"]
        model = args[args.index("--name") + 1] if "--name" in args else args[2]
        presets[model] = name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/var/lib/whalecast/history" in mounts  # training.cache_dir
    assert set(presets) == {"direction", "volume"}  # inference.models (volume: volume-wide)
    schedules = {c["spec"]["schedule"] for c in cronjobs.values()}
    assert len(schedules) == len(cronjobs), "trainers do not start together"


def test_trainers_differ_only_in_name_schedule_and_preset() -> None:
    cronjobs = copy.deepcopy(_of_kind(render(K8S / "base"), "CronJob"))
    for cronjob in cronjobs:
        cronjob["metadata"].pop("name")
        cronjob["spec"].pop("schedule")
        del cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][2:]
    first, *others = cronjobs
    assert others
    assert all(other == first for other in others)


def test_example_overlay_applies_image_config_and_patch() -> None:
    base = render(K8S / "base")
    example = render(K8S / "overlays/example")
    (deployment,) = _daemon_workloads(example)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/whalecast:0.1.0"
    assert container["resources"]["limits"]["memory"] == "3Gi"
    (base_config,) = _of_kind(base, "ConfigMap")
    (config,) = _of_kind(example, "ConfigMap")
    assert config["data"]["config.yml"] == (K8S / "overlays/example/config.yml").read_text()
    assert config["metadata"]["name"] != base_config["metadata"]["name"]  # content hash
    (namespace,) = _of_kind(example, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_sharded_overlay_wires_index_and_count() -> None:
    objects = render(K8S / "overlays/sharded")
    assert [o["kind"] for o in _daemon_workloads(objects)] == ["StatefulSet"]
    (statefulset,) = _of_kind(objects, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WHALECAST_SHARD__COUNT"]["value"] == str(statefulset["spec"]["replicas"])
    field_ref = env["WHALECAST_SHARD__INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field_ref == "metadata.labels['apps.kubernetes.io/pod-index']"
    services = {s["metadata"]["name"] for s in _of_kind(objects, "Service")}
    assert statefulset["spec"]["serviceName"] in services


def test_statefulset_template_is_the_deployment_template_plus_shard_env() -> None:
    (deployment,) = _daemon_workloads(render(K8S / "base"))
    (statefulset,) = _of_kind(render(K8S / "overlays/sharded"), "StatefulSet")
    shard_template = copy.deepcopy(statefulset["spec"]["template"])
    container = shard_template["spec"]["containers"][0]
    container["env"] = [
        e for e in container["env"] if not e["name"].startswith("WHALECAST_SHARD__")
    ]
    assert container.pop("image") == "registry.example.com/whalecast:0.1.0"
    daemon_template = copy.deepcopy(deployment["spec"]["template"])
    assert daemon_template["spec"]["containers"][0].pop("image") == "whalecast"
    assert shard_template == daemon_template


def _config_of(objects: list[Obj], tmp_path: Path) -> Settings:
    (config_map,) = _of_kind(objects, "ConfigMap")
    path = tmp_path / "config.yml"
    path.write_text(config_map["data"]["config.yml"], encoding="utf-8")
    return load_settings(path)


def test_indexed_training_runs_every_job_entry_in_parallel(tmp_path: Path) -> None:
    objects = render(K8S / "overlays/sharded")
    (cronjob,) = _of_kind(objects, "CronJob")
    job = cronjob["spec"]["jobTemplate"]["spec"]
    settings = _config_of(objects, tmp_path)
    entries = settings.training.jobs
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == len(entries)
    # one entry per served model, each promoting its own
    assert sorted(e.name or e.preset for e in entries) == sorted(settings.inference.models)
    (container,) = job["template"]["spec"]["containers"]
    assert container["args"] == ["train"]
    env = {e["name"]: e for e in container["env"]}
    field_path = env["WHALECAST_TRAINING__JOB_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field_path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_indexed_trainer_template_is_the_per_model_template_plus_job_index() -> None:
    (per_model, *_) = _of_kind(render(K8S / "base"), "CronJob")
    (indexed,) = _of_kind(render(K8S / "overlays/sharded"), "CronJob")
    templates = []
    for cronjob in (per_model, indexed):
        template = copy.deepcopy(cronjob["spec"]["jobTemplate"]["spec"]["template"])
        container = template["spec"]["containers"][0]
        container.pop("image")
        container.pop("args")
        container["env"] = [e for e in container["env"] if "JOB_INDEX" not in e["name"]]
        templates.append(template)
    assert templates[0] == templates[1]
