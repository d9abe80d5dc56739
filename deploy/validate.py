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
