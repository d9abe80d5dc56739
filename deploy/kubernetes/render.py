"""Render a kustomization the way ``kubectl kustomize`` does, for the fields Warroom uses.

Warroom's overlays use three kustomization fields only: ``resources`` (files and
directories with their own kustomization), ``namespace`` and ``images``. This renders
them without a kustomize binary, so ``make validate-deploy`` checks exactly what
``kubectl apply -k`` would send; any other field is refused, by name, rather than
silently ignored.

    .venv/bin/python deploy/kubernetes/render.py deploy/kubernetes/overlays/rocksdb
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "ClusterTriggerAuthentication",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


class RenderError(ValueError):
    """A kustomization this renderer cannot reproduce faithfully."""


def render(directory: Path) -> list[dict[str, Any]]:
    """Every resource of the kustomization in ``directory``, as kustomize would emit it."""
    path = directory / "kustomization.yaml"
    if not path.exists():
        raise RenderError(f"{directory}: expected a kustomization.yaml, found none")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(spec) - SUPPORTED)
    if unknown:
        raise RenderError(
            f"{path}: field {unknown[0]!r} is not rendered here; expected only "
            f"{', '.join(sorted(SUPPORTED))}"
        )
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources.extend(render(target))
        elif target.is_file():
            loaded = yaml.safe_load_all(target.read_text(encoding="utf-8"))
            resources.extend(doc for doc in loaded if doc is not None)
        else:
            raise RenderError(f"{path}: resources: expected a file or directory, found {entry!r}")
    namespace = spec.get("namespace")
    if namespace is not None:
        for resource in resources:
            if resource.get("kind") not in CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = namespace
    for image in spec.get("images", []):
        _set_image(resources, image, path)
    _check_unique(resources, path)
    return resources


def _set_image(resources: list[dict[str, Any]], image: dict[str, str], where: Path) -> None:
    name = image.get("name")
    if not name or not set(image) <= {"name", "newName", "newTag"}:
        raise RenderError(
            f"{where}: images: expected name with newName and/or newTag, found {image!r}"
        )
    for resource in resources:
        if resource.get("kind") not in WORKLOADS:
            continue
        spec = resource["spec"]
        pod = spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec
        pod = pod.get("template", pod)["spec"]
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            current = container.get("image", "")
            base, _, tag = current.partition(":")
            if base != name:
                continue
            container["image"] = f"{image.get('newName', base)}:{image.get('newTag', tag)}"


def _check_unique(resources: list[dict[str, Any]], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for resource in resources:
        meta = resource.get("metadata", {})
        key = (resource.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if key in seen:
            raise RenderError(f"{where}: expected each resource once, found {key} twice")
        seen.add(key)


def dump(resources: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(r, sort_keys=False) for r in resources)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: render.py KUSTOMIZATION_DIR", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(dump(render(Path(args[0]))))
    except RenderError as problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
