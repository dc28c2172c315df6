"""The GitHub workflows: valid against GitHub's schema (vendored by check-jsonschema),
triggered as intended, and a git tag v1.2.3 flowing into the image tags, the chart's
version and appVersion. The release steps' shell runs for real here, helm included."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
HELM = ROOT / ".tools" / "bin" / "helm"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def _step(job: dict[str, Any], prefix: str) -> dict[str, Any]:
    (step,) = [s for s in job["steps"] if s.get("name", "").startswith(prefix)]
    return step


def _expand(text: str, values: dict[str, str]) -> str:
    """Substitute ${{ expr }} from `values`; an unknown expression is an error."""

    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", sub, text)


def _run_step(
    step: dict[str, Any], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    # GitHub runs `run:` with bash -e -o pipefail.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", ["ci.yaml", "release.yaml"])
def test_valid_against_github_workflow_schema(name: str) -> None:
    proc = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(WORKFLOWS / name),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_lints_and_tests_pushes_and_pull_requests() -> None:
    ci = _load("ci.yaml")
    assert set(ci["on"]) == {"push", "pull_request"}
    runs = [s.get("run", "") for job in ci["jobs"].values() for s in job["steps"]]
    assert "make lint" in runs and "make test" in runs
    e2e = ci["jobs"]["e2e"]
    assert e2e["if"] == "github.event_name == 'push'" and e2e["needs"] == "test"
    assert [s.get("run") for s in e2e["steps"]][-1] == "make e2e"


def test_release_runs_on_version_tags_only() -> None:
    release = _load("release.yaml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    jobs = release["jobs"]
    # Nothing is pushed unless the tests passed.
    assert "test" in jobs["images"]["needs"] and "images" in jobs["chart"]["needs"]


def _meta(tag: str, owner: str, tmp_path: Path) -> tuple[int, dict[str, str], str]:
    step = _step(_load("release.yaml")["jobs"]["meta"], "Release names")
    out = tmp_path / "github_output"
    out.write_text("")
    proc = _run_step(step, {"TAG": tag, "OWNER": owner, "GITHUB_OUTPUT": str(out)}, tmp_path)
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    return proc.returncode, outputs, proc.stdout + proc.stderr


def test_meta_step_derives_names_from_the_tag(tmp_path: Path) -> None:
    rc, outputs, log = _meta("v1.2.3", "FluxServe", tmp_path)
    assert rc == 0, log
    assert outputs == {
        "tag": "v1.2.3",
        "chart_version": "1.2.3",
        "registry": "ghcr.io/fluxserve",  # image references must be lower case
    }
    rc, outputs, _ = _meta("v2.0.0-rc.1", "fluxserve", tmp_path)
    assert (rc, outputs["chart_version"]) == (0, "2.0.0-rc.1")


@pytest.mark.parametrize("tag", ["v1.2", "1.2.3", "v1.2.3.4", "v01.2.3", "vnext"])
def test_meta_step_refuses_non_semver_tags(tag: str, tmp_path: Path) -> None:
    rc, outputs, log = _meta(tag, "fluxserve", tmp_path)
    assert rc != 0 and not outputs
    assert "release tags look like v1.2.3" in log


def test_images_are_tagged_with_the_git_tag() -> None:
    job = _load("release.yaml")["jobs"]["images"]
    assert set(job["strategy"]["matrix"]["image"]) == {"server", "operator"}
    build = _step(job, "Build and push")
    for image in ("server", "operator"):
        values = {
            "matrix.image": image,
            "needs.meta.outputs.tag": "v1.2.3",
            "needs.meta.outputs.registry": "ghcr.io/fluxserve",
            "github.sha": "0" * 40,
        }
        with_ = {k: _expand(str(v), values) for k, v in build["with"].items()}
        assert with_["tags"] == f"ghcr.io/fluxserve/fluxserve-{image}:v1.2.3"
        assert with_["push"] == "True"
        build_args = dict(line.split("=", 1) for line in with_["build-args"].split())
        assert build_args == {"VERSION": "v1.2.3", "REVISION": "0" * 40}
        # Every build argument is one the Dockerfile declares.
        commands = dockerfile.parse_file(str(ROOT / with_["file"]))
        declared = {c.value[0].split("=")[0] for c in commands if c.cmd == "ARG"}
        assert set(build_args) <= declared


def test_chart_package_step_stamps_the_tag(tmp_path: Path) -> None:
    """Run the release's packaging step with the real helm: the packaged chart's
    version is the tag without "v", its appVersion (the default image tag) the tag."""
    if not HELM.is_file():
        pytest.skip("helm is not installed: run `make tools`")
    job = _load("release.yaml")["jobs"]["chart"]
    step = _step(job, "Package the chart")
    env = {
        k: _expand(
            v, {"needs.meta.outputs.tag": "v1.2.3", "needs.meta.outputs.chart_version": "1.2.3"}
        )
        for k, v in step["env"].items()
    }
    # The step's relative paths, in a scratch directory so that dist/ lands there.
    (tmp_path / ".tools").symlink_to(ROOT / ".tools")
    (tmp_path / "charts").symlink_to(ROOT / "charts")
    proc = _run_step(step, {**env, "HOME": str(tmp_path)}, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    package = tmp_path / "dist" / "fluxserve-operator-1.2.3.tgz"
    with tarfile.open(package) as tar:
        member = tar.extractfile("fluxserve-operator/Chart.yaml")
        assert member is not None
        chart = yaml.safe_load(member.read())
        names = tar.getnames()
    assert (chart["version"], chart["appVersion"]) == ("1.2.3", "v1.2.3")
    assert "fluxserve-operator/crds/fluxserve.dev_fluxdeployments.yaml" in names
    assert not [n for n in names if "/ci/" in n], "test values files are not shipped"
    rendered = subprocess.run(
        [
            str(HELM),
            "template",
            "fluxserve-operator",
            str(package),
            "--show-only",
            "templates/deployment.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout
    image = yaml.safe_load(rendered)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/fluxserve/fluxserve-operator:v1.2.3"
