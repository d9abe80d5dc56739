"""The deployment files say what the code does: every registry topic with its partitions
and configs, least-privilege users, the worker's shape per store, pods that run without
root or a writable image, credentials from Secrets only, a scaler capped at the partition
count, and dashboards and alerts over metrics the worker really exports."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from schemas.topics import (
    ALL_TOPICS,
    AUDIT,
    COMPLIANCE_VERDICTS,
    FEEDBACK,
    INTERVENTIONS,
    MESSAGE_DRAFTS,
    RULES,
    RULES_ACCEPTED,
    TOUCHPOINTS,
    Partitioning,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _load_validate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("warroom_deploy_validate", DEPLOY / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


validate = _load_validate()
render = validate.render
generate = validate.generate

OVERLAYS = ("memory", "rocksdb")
EXTERNAL_METRICS = {
    "kafka_consumergroup_lag": "kafka-exporter (compose) and Strimzi's Kafka Exporter",
}
PLANNED_METRICS: dict[str, str] = {}
"""Metrics the dashboard shows before any process exports them; each says who will."""


def rendered(overlay: str) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = render.render(DEPLOY / "kubernetes" / "overlays" / overlay)
    return resources


def only(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def config(resources: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = only(resources, "ConfigMap", "warroom-config")["data"]
    return data


def workloads(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (r for r in resources if r["kind"] in {"Deployment", "StatefulSet"})


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# --- topics and users -------------------------------------------------------------------


def test_the_committed_topics_and_users_are_what_the_registry_generates() -> None:
    stale = generate.stale(generate.Layout())
    assert not stale, (
        "expected deploy/kubernetes/base/topics.yaml and users.yaml as generated from "
        "schemas/topics.py, found:\n" + "\n".join(stale) + "\nrun: .venv/bin/python "
        "deploy/kubernetes/generate.py (and grant new topics in its components)"
    )


def test_a_stale_generated_file_is_reported_with_a_diff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "base").mkdir()
    for path, text in generate.outputs(generate.Layout()).items():
        (tmp_path / "base" / path.name).write_text(text.replace("partitions: 12", "partitions: 6"))
    monkeypatch.setattr(generate, "HERE", tmp_path)
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    problems = generate.stale(generate.Layout())
    assert len(problems) == 1
    assert "-  partitions: 6" in problems[0] and "+  partitions: 12" in problems[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_registry_topic_has_a_kafka_topic_with_its_partitions_and_configs(
    overlay: str,
) -> None:
    resources = rendered(overlay)
    partitions = int(config(resources)["WARROOM_PARTITIONS"])
    topics = {r["spec"]["topicName"]: r["spec"] for r in resources if r["kind"] == "KafkaTopic"}
    assert set(topics) == {t.name for t in ALL_TOPICS}
    for topic in ALL_TOPICS:
        spec = topics[topic.name]
        expected = partitions if topic.partitioning is Partitioning.CUSTOMER else 1
        assert spec["partitions"] == expected, topic.name
        assert spec["replicas"] == int(config(resources)["WARROOM_REPLICATION_FACTOR"])
        for key, value in topic.configs.items():
            assert spec["config"][key] == value, f"{topic.name}: {key}"
    assert topics[RULES.name]["config"]["cleanup.policy"] == "compact"
    assert topics[RULES_ACCEPTED.name]["config"]["cleanup.policy"] == "compact"
    assert topics[AUDIT.name]["config"]["retention.ms"] == "-1"


def _users(resources: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str, str], set[str]]]:
    users: dict[str, dict[tuple[str, str, str], set[str]]] = {}
    for user in (r for r in resources if r["kind"] == "KafkaUser"):
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        grants: dict[tuple[str, str, str], set[str]] = {}
        for acl in user["spec"]["authorization"]["acls"]:
            res = acl["resource"]
            key = (res["type"], res["name"], res.get("patternType", "literal"))
            grants.setdefault(key, set()).update(acl["operations"])
        users[user["metadata"]["name"]] = grants
    return users


def _topic_grants(grants: dict[tuple[str, str, str], set[str]]) -> dict[str, set[str]]:
    return {name: ops for (kind, name, pattern), ops in grants.items() if kind == "topic"}


def test_the_gate_reads_the_rules_and_writes_drafts_only() -> None:
    gate = _users(rendered("memory"))["warroom-gate"]
    assert _topic_grants(gate) == {
        RULES.name: {"Read", "Describe"},
        RULES_ACCEPTED.name: {"Read", "Describe"},
        MESSAGE_DRAFTS.name: {"Write", "Describe"},
    }
    assert all(kind == "topic" for kind, _, _ in gate)


def test_the_crm_sink_reads_interventions_and_writes_feedback_and_dead_letters() -> None:
    sink = _users(rendered("memory"))["warroom-crm-sink"]
    topics = _topic_grants(sink)
    assert topics == {
        INTERVENTIONS.name: {"Read", "Describe"},
        FEEDBACK.name: {"Write", "Describe"},
        "dlq": {"Write", "Describe"},
    }
    assert sink[("group", "warroom-crm-sink", "literal")] == {"Read", "Describe"}


def test_connectors_write_touchpoints_in_transactions_and_cannot_read_them() -> None:
    connectors = _users(rendered("memory"))["warroom-connectors"]
    topics = _topic_grants(connectors)
    assert topics[TOUCHPOINTS.name] == {"Write", "Describe"}
    assert not any("Read" in ops for name, ops in topics.items() if not name.endswith("."))
    transactional = [k for k in connectors if k[0] == "transactionalId"]
    assert transactional == [("transactionalId", "connector-", "prefix")]


def test_no_user_may_do_everything_or_touch_the_cluster() -> None:
    users = _users(rendered("rocksdb"))
    assert set(users) == {
        "warroom-worker",
        "warroom-connectors",
        "warroom-gate",
        "warroom-crm-sink",
        "warroom-operator",
    }
    for name, grants in users.items():
        for (kind, resource, pattern), ops in grants.items():
            assert "All" not in ops and kind != "cluster", f"{name}: {kind} {resource}"
            if "Create" in ops or "Delete" in ops or "Alter" in ops:
                # Only the worker creates, and only its own <app_id>-... internal topics.
                assert (name, kind, resource, pattern) == (
                    "warroom-worker",
                    "topic",
                    "warroom-",
                    "prefix",
                )
            if pattern == "prefix":
                assert resource.endswith(("-", ".")), f"{name}: prefix {resource!r}"


def test_the_worker_and_connector_transactional_ids_do_not_overlap() -> None:
    users = _users(rendered("memory"))
    prefixes = {
        name: resource
        for name, grants in users.items()
        for kind, resource, pattern in grants
        if kind == "transactionalId"
    }
    assert set(prefixes) == {"warroom-worker", "warroom-connectors"}
    worker, connectors = prefixes["warroom-worker"], prefixes["warroom-connectors"]
    assert not worker.startswith(connectors) and not connectors.startswith(worker)
    chat = only(rendered("memory"), "Deployment", "warroom-chat")
    args = chat["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--instance-id") + 1].startswith(connectors)


def test_the_operator_writes_rules_and_reads_what_the_cli_tails() -> None:
    operator = _topic_grants(_users(rendered("memory"))["warroom-operator"])
    writers = {name for name, ops in operator.items() if "Write" in ops}
    assert writers == {RULES.name}
    assert {"Read", "Describe"} <= operator[COMPLIANCE_VERDICTS.name]
    assert {"Read", "Describe"} <= operator[AUDIT.name]


WORKER_MODULES = sorted(
    set((ROOT / "streams").glob("*.py"))
    - {ROOT / "streams" / n for n in ("cli.py", "gate_service.py", "rules_push.py", "tail.py")}
    - {ROOT / "streams" / n for n in ("audit_cli.py", "explain_cli.py", "topics.py")}
)


def topics_named_in(path: Path) -> set[str]:
    """Registry topics a module names in ``settings.topic(X)`` (or any ``.topic(X)``)."""
    import schemas.topics as registry

    constants = {n: v for n, v in vars(registry).items() if isinstance(v, registry.Topic)}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "topic"
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in constants
        ):
            found.add(constants[node.args[0].id].name)
    return found


def test_the_worker_may_use_every_topic_its_modules_name() -> None:
    worker = _topic_grants(_users(rendered("rocksdb"))["warroom-worker"])
    named = set().union(*(topics_named_in(path) for path in WORKER_MODULES))
    assert {TOUCHPOINTS.name, INTERVENTIONS.name, AUDIT.name} <= named
    missing = named - set(worker)
    assert not missing, (
        f"expected the warroom-worker KafkaUser to grant every topic streams/ names, found "
        f"no grant for {sorted(missing)}: add them to the worker's reads or writes in "
        "deploy/kubernetes/generate.py (components) and run it"
    )


def test_the_worker_may_describe_every_registry_topic_it_checks_at_start() -> None:
    # ensure_topics lists the topics at start and creates those it cannot see.
    worker = _topic_grants(_users(rendered("rocksdb"))["warroom-worker"])
    hidden = [t.name for t in ALL_TOPICS if "Describe" not in worker.get(t.name, set())]
    assert not hidden, (
        f"expected the worker to see every registry topic, found no Describe on {hidden}: "
        "grant them in deploy/kubernetes/generate.py (components) and run it"
    )


def test_the_gate_may_use_every_topic_its_module_names() -> None:
    gate = _topic_grants(_users(rendered("rocksdb"))["warroom-gate"])
    named = topics_named_in(ROOT / "streams" / "gate_service.py")
    assert named == {MESSAGE_DRAFTS.name}
    assert named <= set(gate)


# --- workloads --------------------------------------------------------------------------


def _worker(resources: list[dict[str, Any]]) -> dict[str, Any]:
    found = [w for w in workloads(resources) if w["metadata"]["name"] == "warroom-worker"]
    assert len(found) == 1
    return found[0]


def test_with_rocksdb_the_worker_is_a_stateful_set_with_a_volume_and_static_membership() -> None:
    resources = rendered("rocksdb")
    worker = _worker(resources)
    assert worker["kind"] == "StatefulSet"
    pod = worker["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    assert env["WARROOM_STORE"]["value"] == "rocksdb://"
    assert env["WARROOM_GROUP_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    claims = {c["metadata"]["name"] for c in worker["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == config(resources)["WARROOM_DATA_DIR"]
    assert "data" in claims and "data" not in {v["name"] for v in pod["volumes"]}
    headless = only(resources, "Service", worker["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_with_the_memory_store_the_worker_is_a_deployment() -> None:
    resources = rendered("memory")
    worker = _worker(resources)
    assert worker["kind"] == "Deployment"
    assert not [r for r in resources if r["kind"] == "StatefulSet"]
    env = env_of(worker["spec"]["template"]["spec"]["containers"][0])
    assert env["WARROOM_STORE"]["value"] == "memory://"
    assert "WARROOM_GROUP_INSTANCE_ID" not in env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_scaler_follows_lag_and_stops_at_the_partition_count(overlay: str) -> None:
    resources = rendered(overlay)
    settings = config(resources)
    scaled = only(resources, "ScaledObject", "warroom-worker")
    worker = _worker(resources)
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (worker["kind"], worker["metadata"]["name"])
    assert scaled["spec"]["maxReplicaCount"] == int(settings["WARROOM_PARTITIONS"])
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings["WARROOM_APP_ID"]
    assert trigger["metadata"]["topic"] == TOUCHPOINTS.full_name(settings["WARROOM_TOPIC_PREFIX"])
    assert trigger["metadata"]["bootstrapServers"] == settings["WARROOM_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"].get("allowIdleConsumers", "false") == "false"
    auth = only(resources, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} >= {"password"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_on_a_read_only_root_with_limits(overlay: str) -> None:
    checked = 0
    for workload in workloads(rendered(overlay)):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name
            checked += 1
    assert checked == 4


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_probes_ask_health_readiness_and_startup_on_its_web_port(overlay: str) -> None:
    resources = rendered(overlay)
    container = _worker(resources)["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(config(resources)["WARROOM_WEB_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    monitor = only(resources, "ServiceMonitor", "warroom-worker")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    pdb = only(resources, "PodDisruptionBudget", "warroom-worker")
    labels = _worker(resources)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_secrets_and_each_pod_logs_in_as_its_own_user(
    overlay: str,
) -> None:
    resources = rendered(overlay)
    assert not [r for r in resources if r["kind"] == "Secret"]
    users = set(_users(resources))
    for workload in workloads(resources):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            env = env_of(container)
            for name, entry in env.items():
                if re.search(r"PASSWORD|TOKEN|SECRET|KEY", name):
                    assert "value" not in entry, f"{workload['metadata']['name']}: {name}"
                    assert "secretKeyRef" in entry["valueFrom"], name
            user = env["WARROOM_SASL_USERNAME"]["value"]
            assert user in users
            password = env["WARROOM_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert password == {"name": user, "key": "password"}


# --- compose ----------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    return loaded


def test_compose_runs_kafka_topics_worker_gate_chat_prometheus_and_grafana() -> None:
    services = _compose()["services"]
    assert {"kafka", "topics", "worker", "gate", "chat", "prometheus", "grafana"} <= set(services)
    pom = (DEPLOY / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert version is not None
    assert services["kafka"]["image"] == f"apache/kafka:{version.group(1)}"
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["topics"]["command"] == ["topics"]
    for name in ("worker", "gate", "chat"):
        assert services[name]["depends_on"]["topics"] == {
            "condition": "service_completed_successfully"
        }
        assert services[name]["read_only"] is True
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "../grafana/provisioning:/etc/grafana/provisioning" in grafana_mounts
    assert "../grafana/warroom.json:" in grafana_mounts


def test_compose_prometheus_scrapes_the_worker_and_loads_the_alerts() -> None:
    compose = _compose()["services"]
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: target
        for job in scrape["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    port = compose["worker"]["environment"]["WARROOM_WEB_PORT"]
    assert targets["warroom-worker"] == f"worker:{port}"
    mounts = compose["prometheus"]["volumes"]
    (rules,) = scrape["rule_files"]
    assert f"../prometheus/alerts.yml:{rules}:ro" in mounts
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "warroom.yaml").read_text()
    )
    dashboards = provider["providers"][0]["options"]["path"]
    assert any(m.endswith(f"{dashboards}/warroom.json:ro") for m in compose["grafana"]["volumes"])


# --- metrics ----------------------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "clamp_min", "clamp_max", "by",
    "without", "on", "ignoring", "and", "or", "unless", "vector", "absent", "max", "min", "avg",
    "count", "topk", "bottomk", "group_left", "group_right", "bool", "offset", "humanize",
    "humanizePercentage",
}  # fmt: skip


def exported_series() -> set[str]:
    """Series names the Python processes export: prometheus_client constructors whose
    first argument names a warroom_ metric, with the suffixes Prometheus adds."""
    suffixes = {
        "Counter": ("_total", "_created"),
        "Histogram": ("_bucket", "_sum", "_count", "_created"),
        "Summary": ("_sum", "_count", "_created", ""),
        "Gauge": ("",),
    }
    names: set[str] = set()
    for folder in ("streams", "connectors"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                first = node.args[0]
                if kind not in suffixes or not isinstance(first, ast.Constant):
                    continue
                if not isinstance(first.value, str) or not first.value.startswith("warroom_"):
                    continue
                base = first.value.removesuffix("_total") if kind == "Counter" else first.value
                names.update(base + suffix for suffix in suffixes[kind])
    return names


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"[^"]*"', "", expression)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    words = set(re.findall(r"(?<![\w$.])[A-Za-z_:][\w:]*", text))
    return {w for w in words if w not in PROMQL_WORDS}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "warroom.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def _allowed() -> set[str]:
    planned = {
        name + suffix for name in PLANNED_METRICS for suffix in ("", "_bucket", "_sum", "_count")
    }
    return exported_series() | set(EXTERNAL_METRICS) | planned


def test_no_metric_counted_as_planned_is_exported_already() -> None:
    exported = exported_series()
    assert [name for name in PLANNED_METRICS if name in exported] == []


def test_the_metric_name_parsers_find_what_they_should() -> None:
    exported = exported_series()
    assert {
        "warroom_touchpoints_total",
        "warroom_dead_letters_total",
        "warroom_processing_latency_seconds_bucket",
        "warroom_batch_duration_seconds_count",
    } <= exported
    assert "warroom_touchpoints" not in exported
    assert metric_names(
        'sum by (le) (rate(foo_bucket{a="b"}[5m])) / on () clamp_min(sum(bar_total), 1)'
    ) == {"foo_bucket", "bar_total"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_the_dashboard_and_alerts_read_is_exported(source: str) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else alert_expressions()
    used = set().union(*(metric_names(e) for e in expressions))
    assert used, f"{source}: expected metric names, found none"
    unknown = used - _allowed()
    assert not unknown, f"{source}: expected exported metrics, found {sorted(unknown)}"


def test_the_dashboard_shows_flow_lag_dead_letters_decisions_and_verdicts() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_expressions()))
    assert {
        "warroom_touchpoints_total",
        "kafka_consumergroup_lag",
        "warroom_dead_letters_total",
        "warroom_interventions_total",
        "warroom_suppressed_interventions_total",
        "warroom_compliance_verdicts_total",
        "warroom_gate_decision_seconds_bucket",
    } <= used


def test_the_alerts_cover_lag_dead_letters_and_a_stuck_worker() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {"WarroomConsumerLagHigh", "WarroomDeadLetterRate", "WarroomWorkerStuck"} <= set(alerts)
    stuck = metric_names(alerts["WarroomWorkerStuck"]["expr"])
    assert stuck == {"warroom_batch_duration_seconds_count", "kafka_consumergroup_lag"}


# --- the validator itself ---------------------------------------------------------------


def test_the_validator_names_an_unknown_field_of_a_core_resource() -> None:
    worker = _worker(rendered("memory"))
    worker["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    problems = list(validate.resource_problems(worker, "overlays/memory"))
    assert len(problems) == 1
    assert "Deployment warroom-worker" in problems[0] and "imagePullPolice" in problems[0]


def test_the_validator_checks_custom_resources_against_their_schemas() -> None:
    resources = rendered("memory")
    topic = only(resources, "KafkaTopic", "touchpoints")
    topic["spec"]["partitions"] = 0
    scaled = only(resources, "ScaledObject", "warroom-worker")
    scaled["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5"
    user = only(resources, "KafkaUser", "warroom-gate")
    user["spec"]["authorization"]["acls"][0]["operation"] = "Read"
    for resource, field in (
        (topic, "spec.partitions"),
        (scaled, "spec.triggers.0.metadata"),
        (user, "spec.authorization.acls.0"),
    ):
        problems = list(validate.resource_problems(resource, "test"))
        assert problems and all(field in p for p in problems), problems


def test_the_validator_refuses_a_kind_it_has_no_schema_for() -> None:
    resource = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    (problem,) = validate.resource_problems(resource, "test")
    assert "expected a Kubernetes" in problem and "example.com/v1 Widget" in problem


def test_the_validator_checks_the_compose_file_against_the_compose_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert list(validate.compose_problems()) == []
    broken = _compose()
    broken["services"]["worker"]["restart_policy"] = "always"
    (tmp_path / "compose").mkdir()
    (tmp_path / "compose" / "compose.yaml").write_text(yaml.safe_dump(broken))
    (tmp_path / "schemas").symlink_to(DEPLOY / "schemas")
    monkeypatch.setattr(validate, "DEPLOY", tmp_path)
    monkeypatch.setattr(validate, "ROOT", tmp_path)
    (problem,) = validate.compose_problems()
    assert "services.worker" in problem and "restart_policy" in problem


def test_the_renderer_refuses_a_kustomization_field_it_does_not_render(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches: []\n")
    with pytest.raises(render.RenderError, match="'patches' is not rendered"):
        render.render(tmp_path)


def test_a_trigger_authentication_env_entry_takes_no_key() -> None:
    auth = only(rendered("memory"), "TriggerAuthentication", "warroom-worker-kafka")
    auth["spec"]["env"][0]["key"] = "username"
    (problem,) = validate.resource_problems(auth, "test")
    assert "spec.env.0" in problem and "'key'" in problem
