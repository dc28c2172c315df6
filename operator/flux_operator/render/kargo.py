"""A FluxDeployment's path from commit to production as Kargo objects (``render --kargo``).

Kargo (kargo.akuity.io/v1alpha1, a promotion engine on Argo CD) moves *freight* — here a
server image tag and a commit of the presets' git repository — through *stages*. What
this module writes for one FluxDeployment:

- a ``Project`` named like it (Kargo keeps the project's objects in a namespace of that
  name);
- a ``Warehouse`` subscribing to the image's semantic-version tags and to the presets
  repository;
- the ``Stage`` ``staging`` (freight straight from the Warehouse) and ``production``
  (freight verified in staging); each promotion clones the GitOps repository, writes the
  freight into ``env/<stage>/`` with ``yaml-update`` — the image tag into ``spec.release``
  and the freight's name into the annotation :data:`PROMOTED_FREIGHT` of
  ``fluxdeployment.yaml``, the presets commit into the presets component's ``?ref=`` in
  ``kustomization.yaml`` — commits, pushes, and has Argo CD sync the environment's
  Application (``<name>-<stage>``) to that commit;
- staging's verification: the Argo Rollouts ``AnalysisTemplate`` of
  :mod:`flux_operator.render.kargo_analysis`, which runs the quality gate of
  ``spec.rollout.canary.analysis.quality`` on staging against production. Production has
  no Kargo verification of its own: its FluxDeployment's canary runs the same gate (and the
  Prometheus queries) before any user sees all of the new release.

Where the repositories are is not part of the FluxDeployment's spec (the operator never
clones anything): the annotations :data:`GITOPS_REPO`, :data:`PRESETS_REPO` (and, optional,
:data:`GITOPS_BRANCH`, :data:`PRESETS_PATH`) say it. The layout is documented in
``docs/PROMOTION.md``. Pure, like every renderer: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flux_operator.render.kargo_analysis import QUALITY_ARGS, render_analysis_template
from flux_operator.render.naming import HTTP_PORT
from flux_operator.spec import FluxDeploymentSpec

KARGO_API_VERSION = "kargo.akuity.io/v1alpha1"
STAGES = ("staging", "production")

GITOPS_REPO = "fluxserve.dev/gitops-repo"
"""Annotation: https URL of the repository holding ``env/<stage>/`` (Argo CD's source)."""
GITOPS_BRANCH = "fluxserve.dev/gitops-branch"
"""Annotation: the branch promotions commit to (default ``main``)."""
PRESETS_REPO = "fluxserve.dev/presets-repo"
"""Annotation: https URL of the presets' git repository (presets and golden set)."""
PRESETS_PATH = "fluxserve.dev/presets-path"
"""Annotation: the kustomize Component's folder in that repository (default ``fluxserve``)."""
PROMOTED_FREIGHT = "fluxserve.dev/promoted-freight"
"""Annotation on an environment's FluxDeployment: the Kargo Freight it runs (written by the
promotion beside ``spec.release``; read by people and ``kubectl``, not by the operator)."""

RELEASE = "${{ imageFrom(vars.image).Tag }}"
"""Kargo's expression for the freight's image tag: the release a promotion writes."""
PRESETS_COMMIT = "${{ commitFrom(vars.presetsRepo).ID }}"
"""Kargo's expression for the freight's presets commit."""
FREIGHT_KEY = "metadata.annotations." + PROMOTED_FREIGHT.replace(".", "\\.")
"""yaml-update's key (sjson path) of the annotation: literal dots escaped."""

_HTTPS_URL = re.compile(r"^https://[^\s?#]+$")
# Kargo's pattern for a branch (pkg/subscription/schemas/git.json).
_BRANCH = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9._/-]*[a-zA-Z0-9_-])?$")
_FOLDER = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
# Kargo's SemVer strategy with strictSemvers: major.minor.patch, an optional leading v.
_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
# Kargo's own pattern for an image subscription's repoURL (pkg/subscription/schemas/image.json).
_KARGO_IMAGE_REPO = re.compile(r"^(\w+([\.-]\w+)*(:[\d]+)?/)?(\w+([\.-]\w+)*)(/\w+([\.-]\w+)*)*$")


class KargoInputError(ValueError):
    """The FluxDeployment cannot be turned into a promotion pipeline (one field, one line)."""


@dataclass(frozen=True)
class Pipeline:
    """What the Kargo objects are made of, read and checked from one FluxDeployment."""

    name: str
    image: str
    gitops_repo: str
    gitops_branch: str
    presets_repo: str
    presets_path: str

    def env_namespace(self, stage: str) -> str:
        """The namespace the stage's Argo CD Application deploys the FluxDeployment into."""
        return f"{self.name}-{stage}"

    def service_url(self, stage: str) -> str:
        """The stage's server, seen from the Project's namespace (where analysis runs)."""
        return f"http://{self.name}.{self.env_namespace(stage)}.svc.cluster.local:{HTTP_PORT}"

    @property
    def presets_component(self) -> str:
        """kustomize's remote form of the presets Component; ``?ref=`` is added per freight."""
        return f"{self.presets_repo}//{self.presets_path}"


def _annotation(annotations: dict[str, Any], key: str, default: str | None = None) -> str:
    value = annotations.get(key, default)
    field = f"metadata.annotations[{key}]"
    if value is None:
        raise KargoInputError(f"{field}: required by --kargo (see docs/PROMOTION.md)")
    if not isinstance(value, str) or not value:
        raise KargoInputError(f"{field}: must be a non-empty string")
    return value


def _repo_url(annotations: dict[str, Any], key: str, what: str) -> str:
    url = _annotation(annotations, key)
    if not _HTTPS_URL.match(url) or len(url) > 512:
        raise KargoInputError(
            f"metadata.annotations[{key}]: {url!r} is not an https URL of at most 512 "
            f"characters ({what}; Kargo clones over https)"
        )
    return url


def _check_spec(raw_spec: dict[str, Any], spec: FluxDeploymentSpec) -> None:
    """What the Warehouse and production's canary need of the spec."""
    if "image" not in raw_spec:
        raise KargoInputError(
            "spec.image: required by --kargo (the Warehouse subscribes to this repository's "
            "semver tags; the default image is not one you release)"
        )
    if "@" in spec.image or ":" in spec.image.rsplit("/", 1)[-1]:
        raise KargoInputError(
            f"spec.image: {spec.image!r} pins a tag or digest; --kargo needs the repository "
            "alone (the promotion writes the tag into spec.release)"
        )
    if not _KARGO_IMAGE_REPO.match(spec.image):
        raise KargoInputError(
            f"spec.image: {spec.image!r} is not an image repository Kargo subscribes to "
            "(parts of letters, digits, '.', '-' and '_', separated by '/')"
        )
    if not _SEMVER.match(spec.release):
        raise KargoInputError(
            f"spec.release: {spec.release!r} is not a semantic version such as v1.4.1 "
            "(the Warehouse subscribes to semver tags)"
        )
    canary = spec.rollout.canary
    if spec.rollout.strategy != "Canary":
        raise KargoInputError(
            f"spec.rollout.strategy: {spec.rollout.strategy} gives production no canary; "
            "--kargo needs Canary (production's canary runs the quality gate)"
        )
    if canary is None or canary.analysis is None or canary.analysis.quality is None:
        raise KargoInputError(
            "spec.rollout.canary.analysis.quality: required by --kargo (staging's "
            "verification and production's canary run this quality gate)"
        )


def pipeline_inputs(resource: dict[str, Any], spec: FluxDeploymentSpec) -> Pipeline:
    """The pipeline of a FluxDeployment already valid for the operator, or the first field
    that stops it (:class:`KargoInputError`)."""
    _check_spec(resource.get("spec") or {}, spec)
    annotations = (resource.get("metadata") or {}).get("annotations") or {}
    branch = _annotation(annotations, GITOPS_BRANCH, "main")
    if not _BRANCH.match(branch):
        raise KargoInputError(f"metadata.annotations[{GITOPS_BRANCH}]: {branch!r} is not a branch")
    presets_path = _annotation(annotations, PRESETS_PATH, "fluxserve").strip("/")
    if not _FOLDER.match(presets_path) or ".." in presets_path.split("/"):
        raise KargoInputError(
            f"metadata.annotations[{PRESETS_PATH}]: {presets_path!r} is not a relative folder"
        )
    return Pipeline(
        name=str(resource["metadata"]["name"]),
        image=spec.image,
        gitops_repo=_repo_url(annotations, GITOPS_REPO, "the repository holding env/"),
        gitops_branch=branch,
        presets_repo=_repo_url(annotations, PRESETS_REPO, "the presets' git repository"),
        presets_path=presets_path,
    )


def _metadata(pipe: Pipeline, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": pipe.name,
        "labels": {"app.kubernetes.io/name": "fluxserve", "app.kubernetes.io/instance": pipe.name},
    }


def render_project(pipe: Pipeline) -> dict[str, Any]:
    meta = _metadata(pipe, pipe.name)
    del meta["namespace"]  # cluster-scoped: Kargo makes the namespace of the same name
    return {"apiVersion": KARGO_API_VERSION, "kind": "Project", "metadata": meta}


def render_warehouse(pipe: Pipeline) -> dict[str, Any]:
    """Freight = the newest semver tag of the image + the newest presets commit."""
    image = {
        "repoURL": pipe.image,
        "imageSelectionStrategy": "SemVer",
        "strictSemvers": True,
        "discoveryLimit": 20,
    }
    git = {
        "repoURL": pipe.presets_repo,
        "commitSelectionStrategy": "NewestFromBranch",
        # Only what the environments take from it: a README edit makes no freight.
        "includePaths": [pipe.presets_path],
        "discoveryLimit": 20,
    }
    return {
        "apiVersion": KARGO_API_VERSION,
        "kind": "Warehouse",
        "metadata": _metadata(pipe, pipe.name),
        "spec": {
            "interval": "5m",
            "freightCreationPolicy": "Automatic",
            "subscriptions": [{"image": image}, {"git": git}],
        },
    }


def _write_freight(stage: str) -> list[dict[str, Any]]:
    """The two ``yaml-update`` steps: what a promotion changes in ``env/<stage>/``."""
    env = f"./repo/env/{stage}"
    presets_ref = "${{ vars.presetsComponent }}?ref=" + PRESETS_COMMIT
    return [
        {
            "uses": "yaml-update",
            "as": "release",
            "config": {
                "path": f"{env}/fluxdeployment.yaml",
                "updates": [
                    {"key": "spec.release", "value": RELEASE},
                    {"key": FREIGHT_KEY, "value": "${{ ctx.targetFreight.name }}"},
                ],
            },
        },
        {
            "uses": "yaml-update",
            "as": "presets",
            "config": {
                "path": f"{env}/kustomization.yaml",
                "updates": [{"key": "components.0", "value": presets_ref}],
            },
        },
    ]


def promotion_steps(pipe: Pipeline, stage: str) -> list[dict[str, Any]]:
    """Clone the GitOps repository, write the freight into ``env/<stage>/``, commit, push,
    and sync the stage's Argo CD Application to that commit."""
    checkout = {"branch": pipe.gitops_branch, "path": "./repo"}
    message = (
        f"{stage}: release {RELEASE}, presets {PRESETS_COMMIT} "
        "(freight ${{ ctx.targetFreight.name }})"
    )
    source = {
        "repoURL": "${{ vars.gitopsRepo }}",
        "desiredRevision": "${{ outputs.commit.commit }}",
    }
    return [
        {
            "uses": "git-clone",
            "config": {"repoURL": "${{ vars.gitopsRepo }}", "checkout": [checkout]},
        },
        *_write_freight(stage),
        {"uses": "git-commit", "as": "commit", "config": {"path": "./repo", "message": message}},
        {"uses": "git-push", "config": {"path": "./repo"}},
        {
            "uses": "argocd-update",
            "config": {"apps": [{"name": f"{pipe.name}-{stage}", "sources": [source]}]},
        },
    ]


def _vars(pipe: Pipeline) -> list[dict[str, str]]:
    # Stage-level vars: both the promotion and the verification may read them.
    return [
        {"name": "image", "value": pipe.image},
        {"name": "gitopsRepo", "value": pipe.gitops_repo},
        {"name": "presetsRepo", "value": pipe.presets_repo},
        {"name": "presetsComponent", "value": pipe.presets_component},
    ]


def render_stage(pipe: Pipeline, stage: str) -> dict[str, Any]:
    """``staging`` takes freight from the Warehouse; ``production`` only what staging
    verified."""
    sources: dict[str, Any] = {"direct": True} if stage == "staging" else {"stages": ["staging"]}
    spec: dict[str, Any] = {
        "vars": _vars(pipe),
        "requestedFreight": [
            {"origin": {"kind": "Warehouse", "name": pipe.name}, "sources": sources}
        ],
        "promotionTemplate": {"spec": {"steps": promotion_steps(pipe, stage)}},
    }
    if stage == "staging":
        # In QUALITY_ARGS' order: the release, then stable, then the candidate.
        values = (
            RELEASE,
            pipe.service_url("production"),
            pipe.service_url("staging"),
        )
        spec["verification"] = {
            "analysisTemplates": [{"name": f"{pipe.name}-quality"}],
            "args": [{"name": k, "value": v} for k, v in zip(QUALITY_ARGS, values, strict=True)],
        }
    return {
        "apiVersion": KARGO_API_VERSION,
        "kind": "Stage",
        "metadata": _metadata(pipe, stage),
        "spec": spec,
    }


def render_kargo(resource: dict[str, Any], spec: FluxDeploymentSpec) -> list[dict[str, Any]]:
    """The Project, Warehouse, AnalysisTemplate and Stages, in apply order."""
    pipe = pipeline_inputs(resource, spec)
    canary = spec.rollout.canary
    assert canary is not None and canary.analysis is not None
    assert canary.analysis.quality is not None  # pipeline_inputs checked it
    template = render_analysis_template(
        name=f"{pipe.name}-quality",
        meta=_metadata(pipe, f"{pipe.name}-quality"),
        gate=canary.analysis.quality,
        image=pipe.image,
    )
    return [
        render_project(pipe),
        render_warehouse(pipe),
        template,
        *(render_stage(pipe, stage) for stage in STAGES),
    ]
