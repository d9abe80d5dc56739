"""A data-only format for the linear model: plain JSON, a version and a checksum.

A model read from a topic can only ever be numbers and names: :func:`decode` builds a
:class:`LinearScorer` from lists, strings and floats it has checked one by one; nothing
is imported, called or unpickled. The document holds what predicting *and* continuing to
learn need: the scaler's counts, means and variances, the categories seen, the weights in
the order they were learnt (the order of the sums, so predictions match to the bit), the
intercept and the optimizer's step count.

The ``forest`` challenger has no such format (docs/scoring.md says why): it is evaluated
where it learns and never shipped.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from river import utils

from engine.errors import EngineError

from .models import CATEGORIES_MAX, LinearScorer
from .spec import ModelSpec

FORMAT = "warroom.linear"
FORMAT_VERSION = 1
WEIGHTS_MAX = 100_000
"""Weights a model document may hold; a bigger one is refused before it is built."""


class ModelFormatError(EngineError, ValueError):
    """A model document that cannot be used; the message names the field, what was
    expected and what was found."""


def encode(model: LinearScorer, version: int = 0) -> dict[str, Any]:
    """``model`` as plain data (JSON types only), with its checksum."""
    spec = model.spec
    scaler = model.scaler
    body: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": version,
        "spec": {"name": spec.name, "learning_rate": spec.learning_rate, "l2": spec.l2},
        "examples": model.examples,
        "scaler": [
            [name, int(count), float(scaler.means[name]), float(scaler.vars[name])]
            for name, count in scaler.counts.items()
        ],
        "categories": [[name, list(values)] for name, values in model.categories.items()],
        "weights": [[name, float(w)] for name, w in model.regression._weights.items()],
        "intercept": float(model.regression.intercept),
        "optimizer_steps": int(model.regression.optimizer.n_iterations),
    }
    body["checksum"] = _checksum(body)
    return body


def to_bytes(model: LinearScorer, version: int = 0) -> bytes:
    return json.dumps(encode(model, version), sort_keys=True, separators=(",", ":")).encode()


def from_bytes(data: bytes) -> tuple[LinearScorer, int]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(
            f"model: expected JSON, found bytes that do not parse ({exc})"
        ) from None
    return decode(document)


def decode(document: Any) -> tuple[LinearScorer, int]:
    """The model and its version, or :class:`ModelFormatError` naming what is wrong."""
    if not isinstance(document, Mapping):
        raise ModelFormatError(f"model: expected a mapping, found {type(document).__name__}")
    expected_keys = {
        "format", "format_version", "model_version", "spec", "examples", "scaler",
        "categories", "weights", "intercept", "optimizer_steps", "checksum",
    }  # fmt: skip
    if set(document) != expected_keys:
        raise ModelFormatError(
            f"model: expected the fields {sorted(expected_keys)}, found {sorted(document)}"
        )
    if document["format"] != FORMAT or document["format_version"] != FORMAT_VERSION:
        raise ModelFormatError(
            f"model.format: expected {FORMAT} version {FORMAT_VERSION}, found "
            f"{document['format']!r} version {document['format_version']!r}"
        )
    body = {k: v for k, v in document.items() if k != "checksum"}
    found = document["checksum"]
    if found != _checksum(body):
        raise ModelFormatError(
            f"model.checksum: expected {_checksum(body)}, found {found!r}; the document was "
            "changed or cut"
        )
    version = _integer(document["model_version"], "model.model_version")
    spec_data = document["spec"]
    if not isinstance(spec_data, Mapping) or spec_data.get("name") != "logistic_regression":
        raise ModelFormatError(
            f"model.spec: expected a logistic_regression spec, found {spec_data!r}"
        )
    spec = ModelSpec(
        name="logistic_regression",
        learning_rate=_number(spec_data.get("learning_rate"), "model.spec.learning_rate"),
        l2=_number(spec_data.get("l2"), "model.spec.l2"),
    )
    model = LinearScorer(spec)
    model.examples = _integer(document["examples"], "model.examples")
    rows = _list(document["scaler"], "model.scaler", WEIGHTS_MAX)
    counts: Counter[str] = Counter()
    means: defaultdict[str, float] = defaultdict(float)
    variances: defaultdict[str, float] = defaultdict(float)
    for index, row in enumerate(rows):
        where = f"model.scaler[{index}]"
        if not isinstance(row, list) or len(row) != 4:
            raise ModelFormatError(f"{where}: expected [name, count, mean, var], found {row!r}")
        name = _text(row[0], f"{where}.name")
        if name in counts:
            raise ModelFormatError(f"{where}.name: expected each name once, {name!r} appears twice")
        counts[name] = _integer(row[1], f"{where}.count")
        means[name] = _number(row[2], f"{where}.mean")
        variances[name] = _number(row[3], f"{where}.var")
    model.scaler.counts, model.scaler.means, model.scaler.vars = counts, means, variances
    for index, row in enumerate(_list(document["categories"], "model.categories", WEIGHTS_MAX)):
        where = f"model.categories[{index}]"
        if not isinstance(row, list) or len(row) != 2:
            raise ModelFormatError(f"{where}: expected [feature, [category, ...]], found {row!r}")
        name = _text(row[0], f"{where}.feature")
        if name in model.categories:
            raise ModelFormatError(
                f"{where}.feature: expected each feature once, {name!r} appears twice"
            )
        values = _list(row[1], f"{where}.categories", CATEGORIES_MAX + 1)
        model.categories[name] = [_text(v, f"{where}.categories") for v in values]
    weights: Any = utils.VectorDict()
    for index, row in enumerate(_list(document["weights"], "model.weights", WEIGHTS_MAX)):
        where = f"model.weights[{index}]"
        if not isinstance(row, list) or len(row) != 2:
            raise ModelFormatError(f"{where}: expected [name, weight], found {row!r}")
        name = _text(row[0], f"{where}.name")
        if name in weights:
            raise ModelFormatError(f"{where}.name: expected each name once, {name!r} appears twice")
        weights[name] = _number(row[1], f"{where}.weight")
    model.regression._weights = weights
    model.regression.intercept = _number(document["intercept"], "model.intercept")
    model.regression.optimizer.n_iterations = _integer(
        document["optimizer_steps"], "model.optimizer_steps"
    )
    return model, version


def _checksum(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelFormatError(f"{where}: expected a whole number of at least 0, found {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelFormatError(f"{where}: expected a finite number, found {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise ModelFormatError(f"{where}: expected a name of 1 to 256 characters, found {value!r}")
    return value


def _list(value: Any, where: str, most: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > most:
        shown = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
        raise ModelFormatError(f"{where}: expected a list of at most {most:,}, found {shown}")
    return value
