"""What Kargo and Argo CD would do with the objects ``render --kargo`` writes, played on
files: enough of each to walk a release through the stages in a test, nothing more.

- :class:`KargoStandIn` runs a Stage's promotion steps as Kargo's promotion runner does:
  it evaluates the ``${{ ... }}`` expressions the renderer uses (and refuses any other),
  applies ``yaml-update`` as Kargo documents it (sjson keys, ``\\.`` for a literal dot,
  existing keys only), commits, and calls Argo CD for ``argocd-update``. It also keeps
  Kargo's one rule between stages: a stage whose freight comes from another stage takes
  only freight verified there.
- :class:`ArgoCdStandIn` syncs ``env/<stage>/`` as Argo CD would: ``kustomize build``
  (kubectl's), with the presets Component fetched at the ``?ref=`` the promotion wrote —
  a directory per commit stands in for the presets repository.

Git itself is not played: "the repository" is a working directory, a commit is a digest
of its files.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass(frozen=True)
class Freight:
    name: str
    image_tag: str
    presets_commit: str


def evaluate(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``${{ expression }}`` replaced; an expression the renderer is not
    expected to write fails the test."""

    def one(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in values:
            raise AssertionError(f"unexpected Kargo expression {expression!r}")
        return values[expression]

    return _EXPRESSION.sub(one, text)


def _key_parts(key: str) -> list[str]:
    # sjson paths: dots separate, a backslash escapes a literal dot.
    return [part.replace("\0", ".") for part in key.replace("\\.", "\0").split(".")]


def yaml_update(path: Path, updates: list[tuple[str, str]]) -> None:
    """Kargo's ``yaml-update``: set existing scalar keys (Kargo cannot add one)."""
    doc = yaml.safe_load(path.read_text())
    for key, value in updates:
        node: Any = doc
        parts = _key_parts(key)
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
        if isinstance(node, list):
            assert last < len(node), f"{path}: {key} does not exist"
        else:
            assert last in node, f"{path}: {key} does not exist (yaml-update only updates)"
        node[last] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def tree_digest(root: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass
class KargoStandIn:
    objects: list[dict[str, Any]]
    repo: Path
    sync: Callable[[str, str], Awaitable[None]]
    verified: set[tuple[str, str]] = field(default_factory=set)
    commits: list[str] = field(default_factory=list)

    def stage(self, name: str) -> dict[str, Any]:
        return next(
            o for o in self.objects if o["kind"] == "Stage" and o["metadata"]["name"] == name
        )

    def _values(self, stage: dict[str, Any], freight: Freight) -> dict[str, str]:
        found = {v["name"]: v["value"] for v in stage["spec"]["vars"]}
        values = {f"vars.{k}": v for k, v in found.items()}
        values["imageFrom(vars.image).Tag"] = freight.image_tag
        values["commitFrom(vars.presetsRepo).ID"] = freight.presets_commit
        values["ctx.targetFreight.name"] = freight.name
        return values

    def _check_origin(self, stage: dict[str, Any], freight: Freight) -> None:
        (request,) = stage["spec"]["requestedFreight"]
        sources = request["sources"]
        if not sources.get("direct"):
            upstream = sources["stages"]
            assert any((s, freight.name) in self.verified for s in upstream), (
                f"{stage['metadata']['name']} takes freight verified in {upstream} only"
            )

    async def promote(self, stage_name: str, freight: Freight) -> None:
        stage = self.stage(stage_name)
        self._check_origin(stage, freight)
        values = self._values(stage, freight)
        work = self.repo.parent
        for step in stage["spec"]["promotionTemplate"]["spec"]["steps"]:
            config = step["config"]
            if step["uses"] == "git-clone":
                assert evaluate(config["repoURL"], values) == values["vars.gitopsRepo"]
                assert (work / config["checkout"][0]["path"]).resolve() == self.repo
            elif step["uses"] == "yaml-update":
                updates = [(u["key"], evaluate(u["value"], values)) for u in config["updates"]]
                yaml_update(work / config["path"], updates)
            elif step["uses"] == "git-commit":
                evaluate(config["message"], values)  # only known expressions
                commit = tree_digest(self.repo)
                self.commits.append(commit)
                values[f"outputs.{step['as']}.commit"] = commit
            elif step["uses"] == "argocd-update":
                for app in config["apps"]:
                    (source,) = app["sources"]
                    assert evaluate(source["repoURL"], values) == values["vars.gitopsRepo"]
                    await self.sync(app["name"], evaluate(source["desiredRevision"], values))
            else:
                assert step["uses"] == "git-push", step["uses"]

    def verify(self, stage_name: str, freight: Freight) -> list[dict[str, str]]:
        """Record the freight as verified in the stage; the AnalysisRun's arguments."""
        stage = self.stage(stage_name)
        self.verified.add((stage_name, freight.name))
        args = stage["spec"].get("verification", {}).get("args", [])
        values = self._values(stage, freight)
        return [{"name": a["name"], "value": evaluate(a["value"], values)} for a in args]


@dataclass
class ArgoCdStandIn:
    repo: Path
    presets: dict[str, Path]  # presets commit -> that commit's checkout
    kubectl: Path
    build: Path

    def render(self, stage: str) -> list[dict[str, Any]]:
        """``env/<stage>/`` as Argo CD's kustomize renders it."""
        shutil.rmtree(self.build, ignore_errors=True)
        shutil.copytree(self.repo / "env" / stage, self.build / stage)
        kustomization = self.build / stage / "kustomization.yaml"
        doc = yaml.safe_load(kustomization.read_text())
        url = urlsplit(doc["components"][0])
        (ref,) = parse_qs(url.query)["ref"]
        folder = url.path.split("//", 1)[1]
        # kustomize fetches the remote at that ref; the commit's checkout stands in.
        shutil.copytree(self.presets[ref], self.build / "presets")
        doc["components"][0] = f"../presets/{folder}"
        kustomization.write_text(yaml.safe_dump(doc))
        built = subprocess.run(
            [str(self.kubectl), "kustomize", str(self.build / stage)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [d for d in yaml.safe_load_all(built.stdout) if d]
