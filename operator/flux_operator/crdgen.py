"""Generate the CustomResourceDefinitions from the pydantic models.

``python -m flux_operator.crdgen crds/`` writes ``crds/fluxserve.dev_fluxdeployments.yaml``
and ``crds/fluxserve.dev_fluxloratrainings.yaml``; ``--check`` exits 1 when a file on disk
differs (stale).

Pydantic emits JSON Schema 2020-12; a CRD wants a *structural* OpenAPI v3 schema. The
conversion inlines ``$ref``s, turns ``X | None`` into an optional ``X``, drops what the
API server rejects (``title``, ``propertyNames``, ``anyOf`` of types) and keeps
descriptions, bounds, enums, defaults and the CEL rules. Each spec field's type, bounds
and default (or "Required." / "Optional; no default.") are also written into its
description, from the same schema keys: ``kubectl explain`` shows descriptions only, and
a field added to a model gets its sentences without anyone writing them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from flux_operator.crd_descriptions import _KEY_BOUNDS, _bounds, _document_bounds
from flux_operator.spec import (
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    FluxDeploymentSpec,
    FluxDeploymentStatus,
)
from flux_operator.spec.training import (
    TRAINING_KIND,
    TRAINING_MAX_NAME_LENGTH,
    TRAINING_PLURAL,
    TRAINING_SHORT_NAMES,
    TRAINING_SINGULAR,
    FluxLoRATrainingSpec,
)
from flux_operator.spec.training_status import FluxLoRATrainingStatus

CRD_FILE_NAME = f"{GROUP}_{PLURAL}.yaml"
TRAINING_CRD_FILE_NAME = f"{GROUP}_{TRAINING_PLURAL}.yaml"

_DROP_KEYS = {"title", "propertyNames", "$defs"}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node → a structural OpenAPI v3 node."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {schema}")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        merged = {**_structural(options[0], defs), **rest}
        if merged.get("default", ...) is None:
            del merged["default"]
        return _structural(merged, defs)

    out: dict[str, Any] = {}
    if isinstance(schema.get("propertyNames"), dict):
        # Structural schemas have no propertyNames (the key rule is CEL): its bounds still
        # go into the description.
        out[_KEY_BOUNDS] = _bounds(schema["propertyNames"])
    for key, value in schema.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "patternProperties":
            # Structural schemas have no patternProperties; the key pattern is a CEL rule.
            (value_schema,) = value.values()
            out["additionalProperties"] = _structural(value_schema, defs)
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields already
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema's number is OpenAPI v3.0's bound plus a boolean flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def _model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Release", "type": "string", "jsonPath": ".status.currentRelease"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Canary",
        "type": "string",
        "jsonPath": ".status.canary.summary",
        "description": "The canary: release@weight% and its phase.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
"""What ``kubectl get fxd`` shows."""

TRAINING_PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Progress",
        "type": "string",
        "jsonPath": ".status.progress.summary",
        "description": "Steps done / steps of the run.",
    },
    {
        "name": "Val Loss",
        "type": "number",
        "jsonPath": ".status.metrics.finalValidationLoss",
        "description": "The final validation loss (the base's is in status.metrics).",
    },
    {"name": "Adapter", "type": "string", "jsonPath": ".status.adapter.uri"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
"""What ``kubectl get fxlt`` shows."""


def _root_schema(
    spec_model: type[Any], status_model: type[Any], description: str, max_name: int, why: str
) -> dict[str, Any]:
    """A resource's OpenAPI schema: the spec and status models, and the name's rules."""
    spec_schema = _model_schema(spec_model)
    _document_bounds(spec_schema)
    status_schema = _model_schema(status_model)
    _drop_key_bounds(status_schema)
    status_schema.pop("default", None)
    _strip_defaults(status_schema)
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {max_name}",
                "message": f"metadata.name must be at most {max_name} characters ({why})",
            },
            {
                "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name must be a DNS label (it names a Service)",
            },
        ],
    }


def _crd(kind: str, plural: str, singular: str, short: tuple[str, ...], version: Any) -> Any:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "fluxserve",
                "app.kubernetes.io/part-of": "fluxserve",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short),
                "categories": ["all", "fluxserve"],
            },
            "versions": [version],
        },
    }


def build_training_crd() -> dict[str, Any]:
    """The FluxLoRATraining CustomResourceDefinition as a dict."""
    schema = _root_schema(
        FluxLoRATrainingSpec,
        FluxLoRATrainingStatus,
        f"{TRAINING_KIND}: a LoRA fine-tuning run of FLUX as a Job, evaluated against the "
        "base model, and promoted into a FluxDeployment on request.",
        TRAINING_MAX_NAME_LENGTH,
        "the Job appends -train, its pods 6 more",
    )
    schema["x-kubernetes-validations"][1]["message"] = "metadata.name must be a DNS label"
    version = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": TRAINING_PRINTER_COLUMNS,
        "schema": {"openAPIV3Schema": schema},
    }
    return dict(
        _crd(TRAINING_KIND, TRAINING_PLURAL, TRAINING_SINGULAR, TRAINING_SHORT_NAMES, version)
    )


def build_crd() -> dict[str, Any]:
    """The FluxDeployment CustomResourceDefinition as a dict."""
    version = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        "additionalPrinterColumns": PRINTER_COLUMNS,
        "schema": {
            "openAPIV3Schema": _root_schema(
                FluxDeploymentSpec,
                FluxDeploymentStatus,
                f"{KIND}: FLUX.1 served on GPUs, rolled out and back by release.",
                MAX_NAME_LENGTH,
                "children append -presets-<hash>",
            )
        },
    }
    return dict(_crd(KIND, PLURAL, SINGULAR, SHORT_NAMES, version))


def _drop_key_bounds(node: Any) -> None:
    if isinstance(node, dict):
        node.pop(_KEY_BOUNDS, None)
        for value in node.values():
            _drop_key_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _drop_key_bounds(value)


def _strip_defaults(node: Any) -> None:
    # Status is written by the operator alone; defaults there would only hide missing writes.
    if isinstance(node, dict):
        node.pop("default", None)
        for value in node.values():
            _strip_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _strip_defaults(value)


class _NoAliasDumper(yaml.SafeDumper):
    # Shared sub-schemas would otherwise come out as &id001 anchors: valid YAML, but
    # unreadable in review and rejected by some GitOps tooling.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd_yaml(crd: dict[str, Any] | None = None) -> str:
    header = "# Generated by `make crds` (python -m flux_operator.crdgen crds/). Do not edit.\n"
    body = build_crd() if crd is None else crd
    return header + yaml.dump(body, Dumper=_NoAliasDumper, sort_keys=False, width=100)


def crd_files() -> dict[str, str]:
    """Every CRD file by name, as ``make crds`` writes it."""
    return {
        CRD_FILE_NAME: render_crd_yaml(),
        TRAINING_CRD_FILE_NAME: render_crd_yaml(build_training_crd()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flux_operator.crdgen", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory to write the CRD into")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    files = crd_files()
    if args.check:
        stale = [
            args.out_dir / name
            for name, text in files.items()
            if not (args.out_dir / name).exists() or (args.out_dir / name).read_text() != text
        ]
        for target in stale:
            print(f"{target} is stale: run `make crds`", file=sys.stderr)
        return 1 if stale else 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out_dir / name).write_text(text)
        print(args.out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
