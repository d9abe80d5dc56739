"""Check the hand-written schemas here against the operators' real CRD files.

Not part of ``make validate-deploy`` (the CRD files are not in a package registry); run it
when upgrading Strimzi, KEDA or the Prometheus Operator, with their CRD YAML files:

    .venv/bin/python deploy/schemas/check_crds.py 043-Crd-kafkatopic.yaml ...

For every custom resource of both overlays whose kind one of the files defines, it reports
(1) what the CRD's own openAPIV3Schema refuses in the rendered resource, and (2) every
field the schema here allows that the CRD does not know (the subset has drifted).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import validate  # noqa: E402


def crd_schemas(paths: list[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                found[key] = version["schema"]["openAPIV3Schema"]
    return found


def unknown_fields(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> Iterator[str]:
    """Properties ``ours`` names that ``theirs`` lacks, recursively."""
    if theirs.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in theirs:
        return  # free-form, or a map whose keys the scaler reads (checked here, not there)
    their_props = theirs.get("properties", {})
    for name, sub in ours.get("properties", {}).items():
        if where == "" and name == "metadata":
            continue  # ObjectMeta: checked by the API server, not by the CRD
        if name not in their_props:
            yield f"{where or '(top)'}: {name!r} is not in the CRD"
            continue
        yield from unknown_fields(sub, their_props[name], f"{where}.{name}".lstrip("."))
    if "items" in ours and isinstance(ours["items"], dict):
        yield from unknown_fields(ours["items"], theirs.get("items", {}), f"{where}[]")


def main(argv: list[str]) -> int:
    schemas = crd_schemas([Path(a) for a in argv])
    problems: list[str] = []
    checked = 0
    for (api, kind), file in validate.CUSTOM_SCHEMAS.items():
        crd = schemas.get((api, kind))
        if crd is None:
            continue
        ours = validate._schema(file)
        problems.extend(f"{file}: {p}" for p in unknown_fields(ours, crd, ""))
        for overlay in validate.OVERLAYS:
            folder = validate.DEPLOY / "kubernetes" / "overlays" / overlay
            for resource in validate.render.render(folder):
                if (resource.get("apiVersion"), resource.get("kind")) != (api, kind):
                    continue
                checked += 1
                for error in jsonschema.Draft4Validator(crd).iter_errors(resource):
                    name = resource["metadata"]["name"]
                    path = ".".join(str(p) for p in error.absolute_path)
                    problems.append(f"overlays/{overlay}: {kind} {name}: {path}: {error.message}")
    for problem in problems:
        print(problem)
    print(f"{checked} custom resources checked against {len(schemas)} CRD versions")
    return 1 if problems or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
