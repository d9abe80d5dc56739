"""Check every deployment file offline: ``make validate-deploy`` runs this.

1. YAML lint (yamllint) of every YAML file under deploy/kubernetes, compose,
   prometheus and grafana.
2. The generated KafkaTopic and KafkaUser resources match schemas/topics.py.
3. Both kustomize overlays rendered (deploy/kubernetes/render.py); every core
   Kubernetes resource against the Kubernetes JSON schemas shipped in the
   ``kubernetes-validate`` package (strict: unknown fields are errors); every Strimzi,
   KEDA and prometheus-operator resource against deploy/schemas/*.json.
4. The compose file against the compose-spec JSON schema (deploy/schemas).
5. The Grafana dashboard and provisioning files parse.
6. The Prometheus alert rules with ``promtool check rules`` and their unit tests with
   ``promtool test rules``; the compose Prometheus configuration with
   ``promtool check config``.
7. Every process that exports ``/metrics`` (:data:`SCRAPED`) is scraped: in each overlay
   a Service selects its pods and names its container port, and a ServiceMonitor
   selects that Service and scrapes that port's ``/metrics``; the compose Prometheus has
   a job whose target is the compose service on the port it listens on.

Any failure is printed with the file, the resource and the path of the field, and the
exit status is 1. A missing promtool is a failure, not a skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
sys.path.insert(0, str(DEPLOY / "kubernetes"))

import generate  # noqa: E402
import render  # noqa: E402

KUBERNETES_VERSION = "1.32.0"
"""Oldest Kubernetes release the manifests are checked against (KEDA 2.17+ and Strimzi 1.x
support it)."""
OVERLAYS = ("memory", "rocksdb")
CUSTOM_SCHEMAS = {
    ("kafka.strimzi.io/v1", "KafkaTopic"): "strimzi-kafkatopic-v1.json",
    ("kafka.strimzi.io/v1", "KafkaUser"): "strimzi-kafkauser-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring-servicemonitor-v1.json",
}
YAMLLINT = """
extends: default
rules:
  line-length: {max: 110}
  indentation: {spaces: 2, indent-sequences: whatever}
  truthy: {check-keys: false}
  comments: {min-spaces-from-content: 1}
"""
YAML_DIRS = ("kubernetes", "compose", "prometheus", "grafana")
SCRAPED = {
    "warroom-worker": "worker",  # warroom worker: streams/web.py
    "warroom-gate": "gate",  # warroom gate serve: streams/gate_service.py
}
"""Workloads that export /metrics: Kubernetes name -> compose service."""


def yaml_files() -> list[Path]:
    found: list[Path] = []
    for folder in YAML_DIRS:
        for pattern in ("*.yaml", "*.yml"):
            found.extend((DEPLOY / folder).rglob(pattern))
    return sorted(found)


def lint_problems() -> Iterator[str]:
    config = YamlLintConfig(YAMLLINT)
    for path in yaml_files():
        for problem in linter.run(path.read_text(encoding="utf-8"), config, str(path)):
            yield f"{path.relative_to(ROOT)}:{problem.line}:{problem.column}: {problem.desc}"


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top)"


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "schemas" / name).read_text(encoding="utf-8"))
    return loaded


def resource_problems(resource: dict[str, Any], origin: str) -> Iterator[str]:
    """Problems of one rendered resource against its schema, each naming the field."""
    api, kind = resource.get("apiVersion", ""), resource.get("kind", "")
    name = resource.get("metadata", {}).get("name", "?")
    label = f"{origin}: {kind} {name}"
    custom = CUSTOM_SCHEMAS.get((api, kind))
    if custom is not None:
        validator = jsonschema.Draft202012Validator(_schema(custom))
        for error in sorted(validator.iter_errors(resource), key=str):
            yield f"{label}: {_where(error)}: {error.message}"
        return
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        yield f"{label}: {_where(error)}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError:
        known = ", ".join(f"{a} {k}" for a, k in CUSTOM_SCHEMAS)
        yield (
            f"{label}: expected a Kubernetes {KUBERNETES_VERSION} kind or one of {known}; "
            f"found {api} {kind}"
        )


def manifest_problems() -> Iterator[str]:
    for overlay in OVERLAYS:
        folder = DEPLOY / "kubernetes" / "overlays" / overlay
        try:
            resources = render.render(folder)
        except render.RenderError as problem:
            yield str(problem)
            continue
        for resource in resources:
            yield from resource_problems(resource, f"overlays/{overlay}")


def compose_problems() -> Iterator[str]:
    path = DEPLOY / "compose" / "compose.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(_schema("compose-spec.json"))
    for error in sorted(validator.iter_errors(document), key=str):
        yield f"{path.relative_to(ROOT)}: {_where(error)}: {error.message}"


def grafana_problems() -> Iterator[str]:
    for path in sorted((DEPLOY / "grafana").rglob("*.json")):
        try:
            dashboard = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            yield f"{path.relative_to(ROOT)}:{error.lineno}: expected JSON: {error.msg}"
            continue
        for index, panel in enumerate(dashboard.get("panels", [])):
            if panel.get("type") != "row" and not panel.get("targets"):
                yield f"{path.relative_to(ROOT)}: panels.{index}: expected targets, found none"


def promtool_problems() -> Iterator[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        yield (
            "promtool: expected on PATH (Debian package prometheus, installed by "
            "deploy/prometheus/install-promtool.sh), found nothing"
        )
        return
    prometheus = DEPLOY / "prometheus"
    commands = [
        [promtool, "check", "rules", str(prometheus / "alerts.yml")],
        [promtool, "test", "rules", str(prometheus / "alerts-test.yml")],
        [promtool, "check", "config", "--syntax-only", str(DEPLOY / "compose" / "prometheus.yml")],
    ]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            yield f"{' '.join(command[1:])}: exit {done.returncode}\n{output}"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def _container_ports(workload: dict[str, Any]) -> dict[str, int]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}


def scrape_problems_in(resources: list[dict[str, Any]], origin: str) -> Iterator[str]:
    """Each workload of :data:`SCRAPED` has a Service and a ServiceMonitor that reach its
    ``/metrics``."""

    def named(kind: str) -> list[dict[str, Any]]:
        return [r for r in resources if r.get("kind") == kind]

    for name in SCRAPED:
        workloads = [r for r in resources if r.get("kind") in render.WORKLOADS]
        workload = next((w for w in workloads if w["metadata"]["name"] == name), None)
        if workload is None:
            yield f"{origin}: expected a Deployment or StatefulSet {name}, found none"
            continue
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        ports = _container_ports(workload)
        services = [s for s in named("Service") if _selects(s["spec"].get("selector", {}), labels)]
        if not services:
            yield f"{origin}: {name}: expected a Service selecting its pods, found none"
            continue
        reached = []
        for service in services:
            service_labels = service["metadata"].get("labels", {})
            for monitor in named("ServiceMonitor"):
                match = monitor["spec"].get("selector", {}).get("matchLabels", {})
                if not _selects(match, service_labels):
                    continue
                for endpoint in monitor["spec"].get("endpoints", []):
                    port = next(
                        (p for p in service["spec"]["ports"] if p["name"] == endpoint.get("port")),
                        None,
                    )
                    target = None if port is None else port.get("targetPort")
                    if target not in ports and target not in ports.values():
                        continue
                    if endpoint.get("path", "/metrics") == "/metrics":
                        reached.append(monitor["metadata"]["name"])
        if not reached:
            found = ", ".join(m["metadata"]["name"] for m in named("ServiceMonitor")) or "none"
            yield (
                f"{origin}: {name}: expected a ServiceMonitor scraping /metrics on a port of "
                f"Service {services[0]['metadata']['name']}, found ServiceMonitors: {found}"
            )


def scrape_problems() -> Iterator[str]:
    for overlay in OVERLAYS:
        folder = DEPLOY / "kubernetes" / "overlays" / overlay
        try:
            resources = render.render(folder)
        except render.RenderError:
            continue  # reported by manifest_problems
        yield from scrape_problems_in(resources, f"overlays/{overlay}")
    compose_path = DEPLOY / "compose" / "compose.yaml"
    services = yaml.safe_load(compose_path.read_text(encoding="utf-8"))["services"]
    prometheus_path = DEPLOY / "compose" / "prometheus.yml"
    scrape = yaml.safe_load(prometheus_path.read_text(encoding="utf-8"))
    targets = {
        target
        for job in scrape.get("scrape_configs", [])
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    for service_name in SCRAPED.values():
        service = services.get(service_name)
        if service is None:
            yield f"{compose_path.relative_to(ROOT)}: expected a service {service_name}, found none"
            continue
        wanted = f"{service_name}:{_compose_port(service)}"
        if wanted not in targets:
            yield (
                f"{prometheus_path.relative_to(ROOT)}: scrape_configs: expected a job with "
                f"target {wanted} (/metrics), found {sorted(targets)}"
            )


def _compose_port(service: dict[str, Any]) -> str:
    """The port a compose service of Warroom listens on: WARROOM_WEB_PORT or --port."""
    environment = service.get("environment", {})
    if "WARROOM_WEB_PORT" in environment:
        return str(environment["WARROOM_WEB_PORT"])
    command = [str(part) for part in service.get("command", [])]
    if "--port" in command[:-1]:
        return command[command.index("--port") + 1]
    return "?"


def kustomize_cross_check() -> Iterator[str]:
    """With kubectl present, its kustomize must render what render.py renders."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("  kubectl not on PATH: render.py not compared with kubectl kustomize")
        return
    for overlay in OVERLAYS:
        folder = DEPLOY / "kubernetes" / "overlays" / overlay
        done = subprocess.run(
            [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            yield f"kubectl kustomize overlays/{overlay}: {done.stderr.strip()}"
            continue
        theirs = {_key(r): r for r in yaml.safe_load_all(done.stdout) if r}
        ours = {_key(r): r for r in render.render(folder)}
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                yield (
                    f"overlays/{overlay}: {key}: kubectl kustomize and render.py differ "
                    f"(expected the same resource from both)"
                )


def _key(resource: dict[str, Any]) -> str:
    meta = resource.get("metadata", {})
    return f"{resource.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}"


def main() -> int:
    checks = [
        ("yamllint", lint_problems),
        ("generated topics and users", lambda: iter(generate.stale(generate.Layout()))),
        ("kubernetes manifests", manifest_problems),
        ("kubectl kustomize cross-check", kustomize_cross_check),
        ("compose file", compose_problems),
        ("grafana files", grafana_problems),
        ("prometheus rules and config", promtool_problems),
        ("metrics scraped", scrape_problems),
    ]
    failed = 0
    for name, check in checks:
        problems = list(check())
        print(f"{'FAIL' if problems else 'ok  '} {name}")
        for problem in problems:
            print(f"  {problem}")
        failed += len(problems)
    if failed:
        print(f"validate-deploy: {failed} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
