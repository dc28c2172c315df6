"""`make e2e` cannot run here (no Docker engine, no kind): check what can be checked.

The script and the hack/ scripts pass shellcheck, and without its tools the e2e run
names every missing one and exits non-zero instead of half-running.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "tests" / "e2e" / "run.sh", *sorted((ROOT / "hack").glob("*.sh"))]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shellcheck_clean(script: Path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "shellcheck"), "--severity=style", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_e2e_without_its_tools_says_what_is_missing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / "tests" / "e2e" / "run.sh")],
        # Nothing on PATH, and a tools dir without helm/kubectl.
        env={"PATH": str(tmp_path), "TOOLS_BIN": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("e2e: cannot run, missing:")
    for tool in ("docker", "kind", "helm", "kubectl"):
        assert tool in first, first
    assert "==>" not in proc.stdout, "it must stop before creating anything"


def _heredoc_objects() -> list[dict[str, object]]:
    """The manifests run.sh applies, with its shell variables filled in."""
    text = (ROOT / "tests" / "e2e" / "run.sh").read_text()
    variables = dict(re.findall(r'^([A-Z_]+)="([^"$]*)"', text, re.MULTILINE))
    docs: list[dict[str, object]] = []
    for body in re.findall(r"<<YAML\n(.*?)\nYAML\n", text, re.DOTALL):
        filled = re.sub(r"\$\{([A-Z_]+)\}", lambda m: variables[m.group(1)], body)
        docs += [d for d in yaml.safe_load_all(filled) if d]
    return docs


def test_e2e_manifests_are_valid() -> None:
    """What the e2e run applies is valid for Kubernetes 1.33, the CRD and the operator."""
    from flux_operator.spec import FluxDeploymentSpec

    crd = yaml.safe_load((ROOT / "crds" / "fluxserve.dev_fluxdeployments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    kinds = []
    for doc in _heredoc_objects():
        kinds.append(doc["kind"])
        if doc["kind"] == "FluxDeployment":
            jsonschema.validate(doc, schema)
            spec = FluxDeploymentSpec.model_validate(doc["spec"])
            assert spec.gpu.count == 0, "the e2e run has no GPU"
            assert spec.model.source.pvc is not None
        else:
            kubernetes_validate.validate(doc, "1.33.0", strict=True)
    assert sorted(kinds) == ["FluxDeployment", "Job", "PersistentVolumeClaim"]
